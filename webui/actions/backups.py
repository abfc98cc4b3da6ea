"""Backup actions on one container and its archives: checked for permission and validity, then queued as jobs.

As in ``webui.actions.containers``: ``PermissionDenied`` is 403, ``ValidationError``
400 with field errors, ``JobRefused`` 409 (503 for an offline node).
Privileges, as Proxmox's: ``VM.Backup`` on the container, and
``Datastore.AllocateSpace`` on ``/storage/<name>`` to write to a storage.
Every action on an archive needs both: ``VM.Backup`` on ``/ct/<its ID>``
(resolved through ``/`` and the archive's node when that container is gone)
and the storage's privilege (``Datastore.Audit`` to see it,
``Datastore.AllocateSpace`` to change, restore or delete it); one without
the other opens nothing.  Restoring needs ``VM.Allocate`` on the node for a
new ID, ``VM.Allocate`` on the container to restore over it, and
``Datastore.AllocateSpace`` where the restored disks go; the node checks the
archive's own config (only it can read it) against what the user may set.
The datacenter's backup jobs are ``webui.actions.schedules``.  Input is read by the
serializers of ``webui.api.serializers.backups``, for the API and the pages alike.
"""

from __future__ import annotations

import operator
import re
from functools import reduce

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q

from webui.access import Access, deny, require, require_space
from webui.api.serializers.backups import ArchiveChangeSerializer, BackupSerializer, RestoreSerializer
from webui.api.serializers.base import read
from webui.forms.backups import check_storage, container_ids
from webui.models import BackupArchive, Container, Job
from webui.models.backups import STORAGE_NAME
from webui.models.queue import JobRefused, submit


# ---- one container, one archive --------------------------------------------------------------
def backup_now(access: Access, container: Container, data, address: str | None = None) -> Job:
    require(access, "VM.Backup", container, address=address)
    params = read(BackupSerializer, data)
    check_storage(params["storage"], [container.node])
    require(access, "Datastore.AllocateSpace", path=f"/storage/{params['storage']}", address=address)
    if container.status == Container.Status.CREATING:
        raise JobRefused(f"CT {container.ctid} is still being created")
    return submit(
        "vzdump", container.node, container.path, str(container.ctid), user=access.user, params=params, address=address
    )


def may_see(access: Access, archive: BackupArchive) -> bool:
    """VM.Backup on the archive's container ID and Datastore.Audit on its storage (the list's filter)."""
    return access.can("Datastore.Audit", path=archive.path) and "VM.Backup" in access.ctid_privileges(
        archive.ctid, archive.node.name
    )


def visible_archives(access, rows):
    """The archives a user sees: Datastore.Audit on their storage and VM.Backup on their container ID (which
    answers after the container is gone, through the grants on ``/`` and the archive's node); any other is 404."""
    if access.superuser:
        return rows
    storages = [
        s
        for s in rows.values_list("storage", flat=True).distinct()
        if access.can("Datastore.Audit", path=f"/storage/{s}")
    ]
    rows = rows.filter(storage__in=storages)
    pairs = rows.order_by().values_list("ctid", "node__name").distinct()
    allowed = [
        Q(ctid=ctid, node__name=node) for ctid, node in pairs if "VM.Backup" in access.ctid_privileges(ctid, node)
    ]
    return rows.filter(reduce(operator.or_, allowed)) if allowed else rows.none()


def _archive_access(access: Access, archive: BackupArchive, address: str | None) -> None:
    """VM.Backup on the archive's container ID, whether or not it still exists, and Datastore.AllocateSpace
    on the archive's storage: both, as Proxmox's ``check_volume_access`` asks of a backup volume."""
    where = f"/ct/{archive.ctid}"
    if "VM.Backup" not in access.ctid_privileges(archive.ctid, archive.node.name):
        deny(
            access,
            "denied VM.Backup",
            where,
            f"permission denied: VM.Backup on {where} is required for backup {archive.name}",
            address,
        )
    require(access, "Datastore.AllocateSpace", path=archive.path, address=address)


def download(access: Access, archive: BackupArchive, address: str | None = None) -> tuple[Job, str]:
    """The archive streamed from its node (a ``backupdl`` job, ``webui.filestream``): the rights of every
    action on an archive (VM.Backup on its container ID, Datastore.AllocateSpace on its storage, as Proxmox's
    ``check_volume_access`` asks of a backup volume).  Returns the job and the stream to read."""
    from webui import filestream

    _archive_access(access, archive, address)
    stream = filestream.new_id()
    params = {"storage": archive.storage, "archive": archive.name, "stream": stream}
    job = submit("backupdl", archive.node, archive.path, archive.name, user=access.user, params=params, address=address)
    return job, stream


def restore(access: Access, archive: BackupArchive, data, address: str | None = None) -> Job:
    """Restore to a new ID (a placeholder row is made at once), or over a stopped container with ``force``."""
    _archive_access(access, archive, address)
    data = read(RestoreSerializer, data)
    ids = container_ids([data.get("ctid", archive.ctid)], "ctid")
    if len(ids) != 1:
        raise ValidationError({"ctid": ["one container ID"]})
    ctid, force = ids[0], data["force"]
    rootfs_storage = data.get("rootfs_storage") or data.get("target_storage") or ""
    if rootfs_storage and not re.match(STORAGE_NAME, str(rootfs_storage)):
        raise ValidationError({"rootfs_storage": [f"'{rootfs_storage}' is not a storage name"]})
    hostname = (data.get("hostname") or "").strip()
    options = {"hostname": hostname} if hostname else {}
    params = {
        "storage": archive.storage,
        "archive": archive.name,
        "rootfs_storage": rootfs_storage,
        "force": force,
        "unique": data["unique"],
        "options": options,
    }
    existing = Container.objects.select_related("node", "pool").filter(ctid=ctid).first()
    if existing is not None:
        if not force:
            raise JobRefused(
                f"CT {ctid} already exists; restore over it with force (it must be stopped), or choose a free ID"
            )
        require(access, "VM.Allocate", existing, address=address)
        require_space(access, [rootfs_storage or "local"], address)
        if existing.status != Container.Status.STOPPED:
            raise JobRefused(f"CT {ctid} is {existing.status}; stop it before restoring over it")
        if existing.protected:
            raise JobRefused(f"CT {ctid} is protected; clear 'protection' in its options first")
        if existing.node_id != archive.node_id:
            raise JobRefused(
                f"the backup is on node {archive.node.name} but CT {ctid} is on "
                f"{existing.node.name}; restore it on its own node"
            )
        return submit(
            "vzrestore", existing.node, existing.path, str(ctid), user=access.user, params=params, address=address
        )
    require(access, "VM.Allocate", path=archive.node.path, address=address)
    require_space(access, [rootfs_storage or "local"], address)
    try:
        with transaction.atomic():
            Container.objects.create(ctid=ctid, node=archive.node, status=Container.Status.CREATING, hostname=hostname)
            return submit(
                "vzrestore", archive.node, f"/ct/{ctid}", str(ctid), user=access.user, params=params, address=address
            )
    except IntegrityError:
        raise ValidationError({"ctid": [f"ID {ctid} is already in use"]}) from None


def verify(access: Access, archive: BackupArchive, address: str | None = None) -> Job:
    _archive_access(access, archive, address)
    return archive_job(access, archive, "vzverify", {"storage": archive.storage, "archive": archive.name}, address)


def delete(access: Access, archive: BackupArchive, address: str | None = None) -> Job:
    _archive_access(access, archive, address)
    if archive.protected:
        raise JobRefused(f"backup {archive.name} is protected; unprotect it first")
    return archive_job(
        access, archive, "vzbackupdelete", {"storage": archive.storage, "archive": archive.name}, address
    )


def protect(access: Access, archive: BackupArchive, data, address: str | None = None) -> Job:
    """Set ``protected`` and/or ``notes`` of an archive."""
    _archive_access(access, archive, address)
    params: dict = {"storage": archive.storage, "archive": archive.name, **read(ArchiveChangeSerializer, data)}
    if len(params) == 2:
        raise ValidationError({"protected": ["give 'protected' and/or 'notes'"]})
    return archive_job(access, archive, "vzprotect", params, address)


def archive_job(access: Access, archive: BackupArchive, kind: str, params: dict, address: str | None) -> Job:
    """Queue ``kind`` on the archive's node, on its container's path (which may be gone), as the acting user."""
    return submit(
        kind, archive.node, f"/ct/{archive.ctid}", str(archive.ctid), user=access.user, params=params, address=address
    )
