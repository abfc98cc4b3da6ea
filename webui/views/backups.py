"""Backup pages: a container's Backup tab (a fragment the container page includes) and Datacenter -> Backup.

Forms post with ``data-async`` like every other page; the actions are
``webui.actions.backups`` and ``webui.actions.schedules``; jobs show in the task panel with their progress and log.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from webui.access import access_for
from webui.actions import backups, schedules
from webui.errors import refusal_response
from webui.forms.create import propose_ctid
from webui.models import BackupArchive, BackupSchedule, Container, Job, Node, Pool, RestoreTest, StorageMirror
from webui.models.backups import BACKUP_MODES, COMPRESSIONS, KEEP_FIELDS, next_runs
from webui.views.common import (
    audit_container,
    client_address,
    container_or_gone,
    object_action,
    run_action,
    save_action,
)

BACKUP_KINDS = ("vzdump", "vzrestore", "vzverify", "vzbackupdelete", "vzprotect")


def backup_storages(node: Node) -> list[str]:
    names = {s.name for s in StorageMirror.objects.filter(node=node, enabled=True) if "backup" in (s.content or [])}
    return ["local", *sorted(names - {"local"})]


def backup_tab_context(request, container: Container) -> dict:
    """What ``webui/backups_tab.html`` needs; the container page adds it to its context for the Backup tab."""
    access = access_for(request)
    return {
        "archives": [
            a
            for a in RestoreTest.annotate_proven(BackupArchive.objects.filter(ctid=container.ctid)).select_related(
                "node"
            )
            if backups.may_see(access, a)
        ],
        "can_backup": access.can("VM.Backup", container),
        "restore_id": propose_ctid(),  # a new container by default; over this one only when asked
        "backup_storages": backup_storages(container.node),
        "backup_modes": BACKUP_MODES,
        "compressions": COMPRESSIONS,
        "backup_jobs": Job.objects.filter(path=container.path, kind__in=BACKUP_KINDS).select_related("node", "user")[
            :10
        ],
    }


def backup_tab(request, ctid: int):
    """The Backup tab alone, so the page can refresh it when a backup job ends."""
    container = Container.objects.select_related("node", "pool").filter(ctid=ctid).first()
    if container is None:
        raise Http404(f"CT {ctid} does not exist")
    audit_container(request, container)
    return render(request, "webui/backups_tab.html", {"ct": container, **backup_tab_context(request, container)})


@require_POST
def backup_now(request, ctid: int):
    container, gone = container_or_gone(request, ctid)
    if gone:
        return gone
    return run_action(
        request,
        lambda: backups.backup_now(access_for(request), container, request.POST, address=client_address(request)),
        f"backup of CT {ctid} queued (job {{job.pk}})",
        reverse("ct-tab", args=[ctid, "backup"]),
    )


def _archive(request, pk: int) -> BackupArchive:
    """An archive the user may not see is 404, as one that does not exist."""
    return get_object_or_404(
        backups.visible_archives(access_for(request), BackupArchive.objects.select_related("node")), pk=pk
    )


@require_POST
def archive_action(request, pk: int, what: str):
    """restore / verify / delete / protect / unprotect of one archive."""
    archive, access, address = _archive(request, pk), access_for(request), client_address(request)
    post = request.POST
    calls = {
        "restore": lambda: backups.restore(access, archive, post, address),
        "verify": lambda: backups.verify(access, archive, address),
        "delete": lambda: backups.delete(access, archive, address),
        "protect": lambda: backups.protect(access, archive, {"protected": True}, address),
        "unprotect": lambda: backups.protect(access, archive, {"protected": False}, address),
        "notes": lambda: backups.protect(access, archive, {"notes": post.get("notes", "")}, address),
    }
    if what not in calls:
        raise Http404(f"no backup action '{what}'")
    return run_action(
        request,
        calls[what],
        f"{what} of {archive.name} queued (job {{job.pk}})",
        reverse("ct-tab", args=[archive.ctid, "backup"]),
    )


# ---- Datacenter -> Backup --------------------------------------------------------------------
def schedules_page(request, pk: int | None = None):
    access = access_for(request)
    if not access.can("Sys.Audit", path="/"):
        raise PermissionDenied("permission denied: Sys.Audit on / is required to see backup jobs")
    editing = get_object_or_404(BackupSchedule, pk=pk) if pk else None
    schedules = list(BackupSchedule.objects.prefetch_related("nodes").select_related("pool"))
    now = timezone.now()
    for schedule in schedules:
        schedule.last_job = Job.objects.filter(kind="vzdumpjob", target=str(schedule.pk)).first()
    return render(
        request,
        "webui/backups_schedules.html",
        {
            "schedules": schedules,
            "editing": editing,
            "can_modify": access.can("Sys.Modify", path="/"),
            "nodes": Node.objects.all(),
            "pools": Pool.objects.all(),
            "modes": BACKUP_MODES,
            "compressions": COMPRESSIONS,
            "keep_fields": [(k, k.replace("_", "-"), getattr(editing, k) if editing else None) for k in KEEP_FIELDS],
            "selections": BackupSchedule.Selection.choices,
            "mail_whens": BackupSchedule.MailWhen.choices,
            "preview": next_runs(editing.schedule, now) if editing else [],
            "editing_nodes": [n.name for n in editing.nodes.all()] if editing else [],
        },
    )


def _schedule_data(post) -> dict:
    data = {
        k: post.get(k, "")
        for k in (
            "schedule",
            "selection",
            "ctids",
            "pool",
            "storage",
            "mode",
            "compress",
            "mail_to",
            "mail_when",
            "notes",
            "comment",
            *KEEP_FIELDS,
        )
    }
    data["enabled"] = post.get("enabled") == "1"
    data["nodes"] = post.getlist("nodes")
    return data


@require_POST
def schedule_save(request, pk: int | None = None):
    schedule = get_object_or_404(BackupSchedule, pk=pk) if pk else None
    return save_action(
        request,
        schedules.save_schedule,
        _schedule_data(request.POST),
        schedule,
        "backup job saved",
        reverse("backup-schedules"),
    )


@require_POST
def schedule_delete(request, pk: int):
    schedule = get_object_or_404(BackupSchedule, pk=pk)
    return object_action(
        request, schedule, schedules.delete_schedule, f"backup job {pk} removed", reverse("backup-schedules")
    )


@require_POST
def schedule_run(request, pk: int):
    schedule = get_object_or_404(BackupSchedule, pk=pk)
    return object_action(
        request, schedule, schedules.run_now, f"backup job {pk} started (job {{job.pk}})", reverse("backup-schedules")
    )


@require_GET
def schedule_preview(request):
    """The next runs of a schedule string, or what is wrong with it (the form shows either as one types)."""
    text = request.GET.get("schedule", "")
    try:
        runs = next_runs(text, timezone.now())
    except ValidationError as exc:
        return refusal_response(exc)
    return JsonResponse(
        {
            "next_runs": [t.isoformat() for t in runs],
            "shown": [timezone.localtime(t).strftime("%a %Y-%m-%d %H:%M:%S %Z") for t in runs],
        }
    )
