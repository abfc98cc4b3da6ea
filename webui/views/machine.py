"""The container page's machine actions: Suspend/Resume and Convert to template buttons, the Resources
tab's volume moves, and the Files tab (upload into and download from the container)."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponse
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from webui.access import access_for
from webui.actions import machine as actions
from webui.api.serializers.base import form_validated
from webui.api.serializers.machine import MoveVolumeSerializer, PullSerializer, PushSerializer
from webui.errors import refusal_response
from webui.models.queue import JobRefused
from webui.views.common import client_address, container_action, container_or_gone, run_action

ACTIONS = {
    "suspend": actions.suspend,
    "resume": actions.resume,
    "template": actions.template,
    "upgrade": actions.upgrade,
}


def machine_buttons(access, container) -> list[dict]:
    """Suspend (running, not paused), Resume (paused), Update packages (running, an ostype with a package
    manager), Convert to template (stopped, not one yet)."""
    power = access.can("VM.PowerMgmt", container)
    allocate = access.can("VM.Allocate", container)
    running = container.status == "running"
    result = [
        {
            "action": "suspend",
            "label": "Suspend",
            "when": "running",
            "paused": "0",
            "allowed": power,
            "enabled": power and running and not container.paused,
        },
        {
            "action": "resume",
            "label": "Resume",
            "when": "running",
            "paused": "1",
            "allowed": power,
            "enabled": power and running and container.paused,
        },
    ]
    upgrade = access.can("VM.Config", container) and access.can("VM.Snapshot", container)
    if str(container.config.get("ostype", "")) not in ("", "unmanaged", "nixos"):
        result.append(
            {
                "action": "upgrade",
                "label": "Update packages",
                "when": "running",
                "allowed": upgrade,
                "enabled": upgrade and running,
                "confirm": f"Update the packages of CT {container.ctid}? A safety snapshot is taken first.",
            }
        )
    if str(container.config.get("template", "0")) != "1":
        result.append(
            {
                "action": "template",
                "label": "Convert to template",
                "when": "stopped",
                "allowed": allocate,
                "enabled": allocate and container.status == "stopped",
                "confirm": f"Convert CT {container.ctid} to a template? It will never start again; clone it instead.",
            }
        )
    for button in result:
        button["url"] = reverse("ct-machine", args=[container.ctid, button["action"]])
    return result


@require_POST
def machine_action(request, ctid: int, action: str):
    container, gone = container_or_gone(request, ctid)
    if gone:
        return gone
    if action not in ACTIONS and action != "rebuild":
        raise Http404(f"no action '{action}'")
    if action == "rebuild":  # the one that takes a field: the template to rebuild on

        def act():
            template = request.POST.get("template", "")
            return actions.rebuild(access_for(request), container, template, address=client_address(request))

    else:

        def act():
            return ACTIONS[action](access_for(request), container, address=client_address(request))

    return run_action(
        request,
        act,
        f"{action} of CT {ctid} queued (job {{job.pk}})",
        reverse("ct", args=[ctid]),
    )


@require_POST
def move_volume(request, ctid: int):
    def act(access, container, address):
        body = form_validated(MoveVolumeSerializer, request.POST)
        return actions.move_volume(
            access, container, body["volume"], body["storage"], delete=body.get("delete", False), address=address
        )

    success = f"move of {request.POST.get('volume')} of CT {ctid} queued (job {{job.pk}})"
    return container_action(request, ctid, act, success, "resources")


@require_POST
def push(request, ctid: int):
    def act(access, container, address):
        body = form_validated(PushSerializer, request.POST)
        upload = request.FILES.get("file")
        if upload is None:
            raise ValidationError({"file": ["choose a file to upload"]})
        return actions.push_file(
            access,
            container,
            upload.read(),
            body["path"],
            body.get("user"),
            body.get("group"),
            body.get("perms"),
            address=address,
        )

    success = f"upload to {request.POST.get('path')} in CT {ctid} queued (job {{job.pk}})"
    return container_action(request, ctid, act, success, "files")


@require_POST
def pull(request, ctid: int):
    def act(access, container, address):
        body = form_validated(PullSerializer, request.POST)
        return actions.pull_file(access, container, body["path"], address=address)

    success = f"reading {request.POST.get('path')} from CT {ctid} (job {{job.pk}})"
    return container_action(request, ctid, act, success, "files")


@require_GET
def pulled(request, ctid: int, job_id: int):
    container, gone = container_or_gone(request, ctid)
    if gone:
        return gone
    try:
        staged = actions.pulled(access_for(request), container, job_id, address=client_address(request))
    except (PermissionDenied, ValidationError, JobRefused) as exc:
        return refusal_response(exc)
    return file_response(staged)


def file_response(staged: dict) -> HttpResponse:
    """The bytes as a download, with the file's owner and mode inside the container in headers."""
    info = staged["info"]
    name = info["path"].rstrip("/").rpartition("/")[2] or "file"
    response = HttpResponse(staged["data"], content_type="application/octet-stream")
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
    response["Content-Disposition"] = f'attachment; filename="{safe}"'
    response["X-Caisson-Owner"] = f"{info.get('user') or info['uid']}:{info.get('group') or info['gid']}"
    response["X-Caisson-Ids"] = f"{info['uid']}:{info['gid']}"
    response["X-Caisson-Mode"] = info["mode"]
    return response


def disks_context(access, container) -> dict:
    """The Resources tab's disks (root disk and mount points, webui.views.disks), each with the storage
    its volume is on, and the storages a volume may move to."""
    from webui.actions.containers import storage_of
    from webui.views.disks import disk_rows, free_mount_slots

    disks = [{**row, "storage": storage_of(row["volume"])} for row in disk_rows(container)]
    storages = [s.name for s in container.node.storages.all() if "rootdir" in (s.content or []) and s.enabled]
    return {
        "disks": disks,
        "free_mp": free_mount_slots(container),
        "move_storages": storages,
        "can_move": access.can("VM.Config", container),
    }
