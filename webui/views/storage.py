"""A storage of a node, as Proxmox's storage panel: Summary (type, content, usage), Backups (every archive,
also of destroyed containers, with restore and download), Templates, Volumes (the containers' disks on it).

Seen with Datastore.Audit on ``/storage/<name>``; what each row offers follows the archive's own rights
(``webui.actions.backups``).  A download streams the archive from its node through the broker
(``webui.filestream``): the web server reads no node's disk.
"""

from __future__ import annotations

import re

from django.core.exceptions import PermissionDenied
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from engine.storage import cfg
from webui import filestream
from webui.access import access_for
from webui.actions import backups, storages
from webui.forms.create import propose_ctid
from webui.models import BackupArchive, Container, Node, StorageMirror, StoredTemplate
from webui.views.backups import _archive
from webui.views.common import client_address, run_action

VOLUME_KEYS = re.compile(r"^(rootfs|mp\d+)$")


def storage_page(request, node: str, name: str):
    storage = get_object_or_404(StorageMirror.objects.select_related("node"), node__name=node, name=name)
    access = access_for(request)
    if not access.can("Datastore.Audit", storage):
        raise PermissionDenied(f"permission denied: Datastore.Audit on {storage.path} is required")
    rows = BackupArchive.objects.filter(node=storage.node, storage=name).select_related("node")
    existing = set(Container.objects.values_list("ctid", flat=True))
    archives = [(a, a.ctid in existing) for a in backups.visible_archives(access, rows)]
    volumes = []
    for ct in access.visible_containers(Container.objects.filter(node=storage.node)):
        for key, value in sorted(ct.config.items()):
            if VOLUME_KEYS.match(key) and str(value).startswith(f"{name}:"):
                volumes.append((ct, key, str(value).split(",")[0], _size(str(value))))
    return render(
        request,
        "webui/storage.html",
        {
            "storage": storage,
            "percent": round(100 * storage.used / storage.total, 1) if storage.total else None,
            "archives": archives,
            "templates": StoredTemplate.objects.filter(node=storage.node) if "vztmpl" in storage.content else [],
            "volumes": volumes,
            "next_id": propose_ctid(),
            "can_upload": "vztmpl" in storage.content and access.can("Datastore.AllocateTemplate", storage.node),
        },
    )


def _size(value: str) -> str:
    match = re.search(r"(?:^|,)size=([^,]+)", value)
    return match.group(1) if match else ""


def download_backup(request, pk: int):
    """The archive itself, streamed as it comes from its node (404 if unseen, 403 without the rights)."""
    return stream_response(access_for(request), _archive(request, pk), client_address(request))


def stream_response(access, archive: BackupArchive, address: str | None) -> StreamingHttpResponse:
    """The page's and the API's download: a ``backupdl`` job on the archive's node, its stream relayed."""
    job, stream = backups.download(access, archive, address=address)

    def chunks():
        try:
            yield from filestream.receive(stream)
        except filestream.StreamError:
            return  # the connection ends short of Content-Length: the browser reports a failed download

    response = StreamingHttpResponse(chunks(), content_type="application/octet-stream")
    response["Content-Disposition"] = f'attachment; filename="{archive.name}"'
    response["Content-Length"] = str(archive.size)
    response["X-Caisson-Job"] = str(job.pk)
    return response


def storages_page(request):
    """Datacenter -> Storage: every node's storages, with add and remove for Sys.Modify on ``/``."""
    access = access_for(request)
    if not access.can("Sys.Audit", path="/"):
        raise PermissionDenied("permission denied: Sys.Audit on / is required to see the datacenter's storages")
    rows = [s for s in StorageMirror.objects.select_related("node") if access.can("Datastore.Audit", s)]
    return render(
        request,
        "webui/storages.html",
        {
            "storages": rows,
            "nodes": Node.objects.all(),
            "types": cfg.TYPES,
            "contents": cfg.CONTENT_TYPES,
            "can_modify": access.can("Sys.Modify", path="/"),
        },
    )


@require_POST
def storage_action(request, node: str, op: str):
    """``op``: add (storage, type, path, content) or remove (storage)."""
    row = get_object_or_404(Node, name=node)
    access, address, post = access_for(request), client_address(request), request.POST
    if op == "add":
        data = {k: post.get(k, "") for k in ("storage", "type", "path")}
        data["content"] = ",".join(post.getlist("content")) or "rootdir"
        call = lambda: storages.add_job(access, row, data, address)  # noqa: E731
    elif op == "remove":
        call = lambda: storages.remove_job(access, row, post.get("storage", ""), address)  # noqa: E731
    else:
        raise PermissionDenied(f"no storage action '{op}'")
    return run_action(request, call, f"storage {op} on {node} queued (job {{job.pk}})", reverse("storages"))
