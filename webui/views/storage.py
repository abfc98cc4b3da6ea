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

from webui import filestream
from webui.access import access_for
from webui.actions import backups
from webui.forms.create import propose_ctid
from webui.models import BackupArchive, Container, StorageMirror, StoredTemplate
from webui.views.backups import _archive
from webui.views.common import client_address

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
