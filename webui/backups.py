"""Backup actions: checked for permission and validity, then queued as jobs; and backup jobs (schedules).

As in ``webui.actions``: ``PermissionDenied`` is 403, ``ValidationError``
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
``Sys.Modify`` on ``/`` for the datacenter's backup jobs.
"""
from __future__ import annotations

import re
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from webui.access import Access
from webui.actions import _audit, deny, require, require_space
from webui.jobs import JobRefused, submit
from webui.models import AuditEntry, BackupArchive, BackupSchedule, Container, Job, Node, Pool, StorageMirror
from webui.models.backups import BACKUP_MODES, COMPRESSIONS, KEEP_FIELDS, STORAGE_NAME
from webui.models.inventory import CTID_MAX, CTID_MIN

TRUE = {True, "1", "true", "on", "yes"}  # True == 1, False == 0
FALSE = {False, "0", "false", "off", "no", "", None}


# ---- input helpers ---------------------------------------------------------------------------
def _flag(data, key: str, default: bool = False) -> bool:
    value = data.get(key, default)
    if isinstance(value, str):
        value = value.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ValidationError({key: [f"expected true or false, got '{value}'"]})


def _ids(value, key: str) -> list[int]:
    """A list of container IDs from a list or a comma/space-separated string."""
    if value in (None, ""):
        return []
    items = re.split(r"[\s,;]+", value.strip()) if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValidationError({key: ["a list of container IDs"]})
    result = []
    for item in items:
        if item in ("", None):
            continue
        try:
            number = int(item)
            if isinstance(item, bool) or isinstance(item, float) or not CTID_MIN <= number <= CTID_MAX:
                raise ValueError
        except (TypeError, ValueError):
            raise ValidationError({key: [f"'{item}' is not a container ID ({CTID_MIN}..{CTID_MAX})"]}) from None
        result.append(number)
    return sorted(set(result))


def _choice(data, key: str, choices, default: str) -> str:
    value = data.get(key) or default
    if value not in choices:
        raise ValidationError({key: [f"'{value}' is not one of {', '.join(choices)}"]})
    return value


def check_storage(storage, nodes: list[Node] | None = None) -> str:
    """A storage that holds backups: ``local`` (every node has it) or one a node reports with backup content."""
    if not isinstance(storage, str) or not re.match(STORAGE_NAME, storage):
        raise ValidationError({"storage": [f"'{storage}' is not a storage name"]})
    if storage == "local":
        return storage
    found = StorageMirror.objects.filter(name=storage)
    if nodes:
        found = found.filter(node__in=nodes)
    found = list(found)
    if not found:
        raise ValidationError({"storage": [f"storage '{storage}' does not exist"
                                           + (f" on node {', '.join(n.name for n in nodes)}" if nodes else "")]})
    if not any("backup" in (s.content or []) and s.enabled for s in found):
        raise ValidationError({"storage": [f"storage '{storage}' does not hold backups (content 'backup' is not "
                                           "enabled on it)"]})
    return storage


def _backup_params(data) -> dict:
    exclude = data.get("exclude") or []
    if isinstance(exclude, str):
        exclude = [line.strip() for line in exclude.splitlines() if line.strip()]
    if not isinstance(exclude, list) or len(exclude) > 64 or not all(
            isinstance(p, str) and p.strip() and len(p) <= 1024 and "\n" not in p and "\x00" not in p
            for p in exclude):
        raise ValidationError({"exclude": ["a list of at most 64 path globs, one per line"]})
    notes = data.get("notes") or ""
    if not isinstance(notes, str) or len(notes) > 1024:
        raise ValidationError({"notes": ["text of at most 1024 characters"]})
    return {"storage": data.get("storage") or "local", "mode": _choice(data, "mode", BACKUP_MODES, "snapshot"),
            "compress": _choice(data, "compress", COMPRESSIONS, "zstd"), "exclude": exclude, "notes": notes,
            "protected": _flag(data, "protected")}


# ---- one container, one archive --------------------------------------------------------------
def backup_now(access: Access, container: Container, data, address: str | None = None) -> Job:
    require(access, "VM.Backup", container, address=address)
    params = _backup_params(data)
    check_storage(params["storage"], [container.node])
    require(access, "Datastore.AllocateSpace", path=f"/storage/{params['storage']}", address=address)
    if container.status == Container.Status.CREATING:
        raise JobRefused(f"CT {container.ctid} is still being created")
    return submit("vzdump", container.node, container.path, str(container.ctid), user=access.user, params=params,
                  address=address)


def may_see(access: Access, archive: BackupArchive) -> bool:
    """VM.Backup on the archive's container ID and Datastore.Audit on its storage (the list's filter)."""
    return access.can("Datastore.Audit", path=archive.path) and "VM.Backup" in access.ctid_privileges(
        archive.ctid, archive.node.name)


def _archive_access(access: Access, archive: BackupArchive, address: str | None) -> None:
    """VM.Backup on the archive's container ID, whether or not it still exists, and Datastore.AllocateSpace
    on the archive's storage: both, as Proxmox's ``check_volume_access`` asks of a backup volume."""
    where = f"/ct/{archive.ctid}"
    if "VM.Backup" not in access.ctid_privileges(archive.ctid, archive.node.name):
        deny(access, "denied VM.Backup", where, f"permission denied: VM.Backup on {where} is required for "
                                                f"backup {archive.name}", address)
    require(access, "Datastore.AllocateSpace", path=archive.path, address=address)


def restore(access: Access, archive: BackupArchive, data, address: str | None = None) -> Job:
    """Restore to a new ID (a placeholder row is made at once), or over a stopped container with ``force``."""
    _archive_access(access, archive, address)
    value = data.get("ctid", archive.ctid)
    ids = _ids([value] if isinstance(value, int | str) else value, "ctid")
    if len(ids) != 1:
        raise ValidationError({"ctid": ["one container ID"]})
    ctid, force = ids[0], _flag(data, "force")
    rootfs_storage = data.get("rootfs_storage") or data.get("target_storage") or ""
    if rootfs_storage and not re.match(STORAGE_NAME, str(rootfs_storage)):
        raise ValidationError({"rootfs_storage": [f"'{rootfs_storage}' is not a storage name"]})
    hostname = (data.get("hostname") or "").strip()
    options = {"hostname": hostname} if hostname else {}
    params = {"storage": archive.storage, "archive": archive.name, "rootfs_storage": rootfs_storage,
              "force": force, "unique": _flag(data, "unique"), "options": options}
    existing = Container.objects.select_related("node", "pool").filter(ctid=ctid).first()
    if existing is not None:
        if not force:
            raise JobRefused(f"CT {ctid} already exists; restore over it with force (it must be stopped), or "
                             "choose a free ID")
        require(access, "VM.Allocate", existing, address=address)
        require_space(access, [rootfs_storage or "local"], address)
        if existing.status != Container.Status.STOPPED:
            raise JobRefused(f"CT {ctid} is {existing.status}; stop it before restoring over it")
        if existing.protected:
            raise JobRefused(f"CT {ctid} is protected; clear 'protection' in its options first")
        if existing.node_id != archive.node_id:
            raise JobRefused(f"the backup is on node {archive.node.name} but CT {ctid} is on "
                             f"{existing.node.name}; restore it on its own node")
        return submit("vzrestore", existing.node, existing.path, str(ctid), user=access.user, params=params,
                      address=address)
    require(access, "VM.Allocate", path=archive.node.path, address=address)
    require_space(access, [rootfs_storage or "local"], address)
    try:
        with transaction.atomic():
            Container.objects.create(ctid=ctid, node=archive.node, status=Container.Status.CREATING,
                                     hostname=hostname)
            return submit("vzrestore", archive.node, f"/ct/{ctid}", str(ctid), user=access.user, params=params,
                          address=address)
    except IntegrityError:
        raise ValidationError({"ctid": [f"ID {ctid} is already in use"]}) from None


def verify(access: Access, archive: BackupArchive, address: str | None = None) -> Job:
    _archive_access(access, archive, address)
    return submit("vzverify", archive.node, f"/ct/{archive.ctid}", str(archive.ctid), user=access.user,
                  params={"storage": archive.storage, "archive": archive.name}, address=address)


def delete(access: Access, archive: BackupArchive, address: str | None = None) -> Job:
    _archive_access(access, archive, address)
    if archive.protected:
        raise JobRefused(f"backup {archive.name} is protected; unprotect it first")
    return submit("vzbackupdelete", archive.node, f"/ct/{archive.ctid}", str(archive.ctid), user=access.user,
                  params={"storage": archive.storage, "archive": archive.name}, address=address)


def protect(access: Access, archive: BackupArchive, data, address: str | None = None) -> Job:
    """Set ``protected`` and/or ``notes`` of an archive."""
    _archive_access(access, archive, address)
    params: dict = {"storage": archive.storage, "archive": archive.name}
    if "protected" in data:
        params["protected"] = _flag(data, "protected")
    if "notes" in data:
        notes = data.get("notes") or ""
        if not isinstance(notes, str) or len(notes) > 1024:
            raise ValidationError({"notes": ["text of at most 1024 characters"]})
        params["notes"] = notes
    if len(params) == 2:
        raise ValidationError({"protected": ["give 'protected' and/or 'notes'"]})
    return submit("vzprotect", archive.node, f"/ct/{archive.ctid}", str(archive.ctid), user=access.user,
                  params=params, address=address)


# ---- backup jobs (schedules) -----------------------------------------------------------------
SCHEDULE_TEXT_FIELDS = {"schedule": 128, "mail_to": 512, "notes": 512, "comment": 255}


def _apply(schedule: BackupSchedule, data) -> list[Node] | None:
    """Copy the fields given in ``data`` onto ``schedule``; returns the nodes if given. Field errors together."""
    errors: dict[str, list[str]] = {}
    nodes = None

    def field(key, convert):
        if key not in data:
            return
        try:
            convert()
        except ValidationError as exc:
            for name, messages in exc.message_dict.items():
                errors.setdefault(name, []).extend(messages)

    for key, limit in SCHEDULE_TEXT_FIELDS.items():
        def text(key=key, limit=limit):
            value = data.get(key)
            value = "" if value is None else value
            if not isinstance(value, str) or len(value) > limit:
                raise ValidationError({key: [f"text of at most {limit} characters"]})
            setattr(schedule, key, value.strip() if key != "notes" else value)
        field(key, text)
    field("enabled", lambda: setattr(schedule, "enabled", _flag(data, "enabled", True)))
    field("selection", lambda: setattr(schedule, "selection",
                                       _choice(data, "selection", BackupSchedule.Selection.values, "all")))
    field("ctids", lambda: setattr(schedule, "ctids", _ids(data.get("ctids"), "ctids")))
    field("mode", lambda: setattr(schedule, "mode", _choice(data, "mode", BACKUP_MODES, "snapshot")))
    field("compress", lambda: setattr(schedule, "compress", _choice(data, "compress", COMPRESSIONS, "zstd")))
    field("mail_when", lambda: setattr(schedule, "mail_when", _choice(data, "mail_when",
                                                                       BackupSchedule.MailWhen.values, "always")))
    field("storage", lambda: setattr(schedule, "storage", data.get("storage") or "local"))
    for key in KEEP_FIELDS:
        def keep(key=key):
            value = data.get(key)
            if value in (None, ""):
                setattr(schedule, key, None)
                return
            try:
                number = int(value)
                if isinstance(value, bool) or isinstance(value, float) and value != number:
                    raise ValueError
            except (TypeError, ValueError):
                raise ValidationError({key: [f"'{value}' is not a whole number"]}) from None
            if number < 0:
                raise ValidationError({key: [f"{key.replace('_', '-')} must be 0 or more, not {number}"]})
            setattr(schedule, key, number)
        field(key, keep)

    def pool():
        name = data.get("pool")
        if not name:
            schedule.pool = None
            return
        found = Pool.objects.filter(name=name).first()
        if found is None:
            raise ValidationError({"pool": [f"pool '{name}' does not exist"]})
        schedule.pool = found
    field("pool", pool)

    def node_list():
        nonlocal nodes
        names = data.get("nodes") or []
        if isinstance(names, str):
            names = [n for n in re.split(r"[\s,;]+", names) if n]
        if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
            raise ValidationError({"nodes": ["a list of node names"]})
        found = list(Node.objects.filter(name__in=names))
        unknown = sorted(set(names) - {n.name for n in found})
        if unknown:
            raise ValidationError({"nodes": [f"unknown node(s): {', '.join(unknown)}"]})
        nodes = found
    field("nodes", node_list)
    if errors:
        raise ValidationError(errors)
    return nodes


def _check_schedule(schedule: BackupSchedule, nodes: list[Node]) -> None:
    errors: dict[str, list[str]] = {}
    try:
        schedule.full_clean(exclude=["periodic_task", "next_due", "last_slot", "created"])
    except ValidationError as exc:
        errors.update(exc.message_dict)
    try:
        check_storage(schedule.storage, nodes or None)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if schedule.selection == BackupSchedule.Selection.INCLUDE and "ctids" not in errors:
        known = set(Container.objects.filter(ctid__in=schedule.ctids).values_list("ctid", flat=True))
        unknown = [c for c in schedule.ctids if c not in known]
        if unknown:
            errors["ctids"] = [f"CT {', '.join(map(str, unknown))} does not exist"]
    if errors:
        raise ValidationError(errors)


def save_schedule(access: Access, data, schedule: BackupSchedule | None = None,
                  address: str | None = None) -> BackupSchedule:
    """Create (``schedule`` None) or change a backup job; its beat task follows in the same transaction."""
    require(access, "Sys.Modify", path="/", address=address)
    if not hasattr(data, "get"):
        raise ValidationError({"non_field_errors": ["a JSON object of backup job fields"]})
    creating = schedule is None
    if creating:
        schedule = BackupSchedule()
        if not data.get("schedule"):
            raise ValidationError({"schedule": ["a schedule is required (e.g. 'mon..fri 02:00' or '0 2 * * *')"]})
    else:
        schedule = BackupSchedule.objects.get(pk=schedule.pk)
    nodes = _apply(schedule, data)
    current_nodes = nodes if nodes is not None else (list(schedule.nodes.all()) if schedule.pk else [])
    _check_schedule(schedule, current_nodes)
    with transaction.atomic():
        schedule.save()
        if nodes is not None:
            schedule.nodes.set(nodes)
        schedule.rearm()
        _audit(access, "backupjob.create" if creating else "backupjob.update", "/", address,
               schedule=schedule.pk, text=schedule.schedule, enabled=schedule.enabled)
    return schedule


def delete_schedule(access: Access, schedule: BackupSchedule, address: str | None = None) -> None:
    require(access, "Sys.Modify", path="/", address=address)
    pk = schedule.pk
    with transaction.atomic():
        schedule.delete()  # and its beat task
        _audit(access, "backupjob.delete", "/", address, schedule=pk)


def run_now(access: Access, schedule: BackupSchedule, address: str | None = None) -> list[Job]:
    """Proxmox's "Run now": a run on every node the job covers, outside its schedule."""
    require(access, "Sys.Modify", path="/", address=address)
    nodes = run_nodes(schedule)
    if not nodes:
        raise JobRefused(f"backup job {schedule.pk} selects no container on any node")
    jobs = dispatch(schedule, user=access.user, address=address)
    if not jobs:
        raise JobRefused(f"backup job {schedule.pk} could not start on any node (offline, or a run is still "
                         "going on); see the audit log")
    return jobs


# ---- runs: used by run_now here and by beat's check on the node ------------------------------
def dispatch(schedule: BackupSchedule, slot: datetime | None = None, user=None, address: str | None = None
             ) -> list[Job]:
    """Queue one ``vzdumpjob`` per node with containers to back up; refusals are audited, not raised."""
    jobs = []
    for node, report_missing, expected in run_nodes(schedule):
        params = {"slot": slot.isoformat() if slot else None, "report_missing": report_missing, "expected": expected}
        try:
            jobs.append(submit("vzdumpjob", node, "/", str(schedule.pk), user=user, params=params, address=address))
        except JobRefused as exc:
            username = getattr(user, "username", "") if user is not None else ""
            AuditEntry.objects.create(user=user if user is not None and user.is_authenticated else None,
                                      username=username, action="vzdumpjob", path="/", address=address,
                                      outcome="refused", detail={"schedule": schedule.pk, "node": node.name,
                                                                 "message": str(exc)})
    return jobs


def run_nodes(schedule: BackupSchedule) -> list[tuple[Node, bool, list[int]]]:
    """The nodes a run goes to: each with whether it reports listed containers that exist nowhere, and the
    listed containers the mirror puts on it (an error there if they are gone by the time it runs)."""
    nodes = schedule.covered_nodes()
    if schedule.selection == BackupSchedule.Selection.INCLUDE:
        where: dict[int, list[int]] = {}
        for ctid, node_id in Container.objects.filter(ctid__in=schedule.ctids).values_list("ctid", "node_id"):
            where.setdefault(node_id, []).append(ctid)
        chosen = [n for n in nodes if n.pk in where]
        unknown = sum(len(ids) for ids in where.values()) < len(schedule.ctids)
        if unknown and nodes and not chosen:
            chosen = [nodes[0]]
        return [(n, unknown and i == 0, sorted(where.get(n.pk, []))) for i, n in enumerate(chosen)]
    if schedule.selection == BackupSchedule.Selection.POOL:
        where_pool = set(Container.objects.filter(pool_id=schedule.pool_id).values_list("node_id", flat=True))
        return [(n, False, []) for n in nodes if n.pk in where_pool]
    return [(n, False, []) for n in nodes]
