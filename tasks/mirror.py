"""The node side of the mirror: the database follows what the node's disk says.

The node's state (configs, cgroups, storages, dump directories) is the truth;
these functions copy it into the web tier's rows, after each job and on the
agent's tick, and push what changed to the browsers. The web tier never reads
a node's disk.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from engine.errors import EngineError, NotFound
from tasks.runtime import node_engine
from webui.live import publish
from webui.models import BackupArchive, CatalogEntry, Container, Node, StorageMirror, StoredTemplate

log = logging.getLogger(__name__)
FULL_RESYNC_AFTER = 300.0  # seconds: list every dump directory again even if its mtime did not change
_listed: dict[tuple[str, str], tuple[int, float]] = {}  # (node, storage) -> (dir mtime_ns, when listed)


# ---- containers ----------------------------------------------------------------------------
def container_fields(status, config) -> dict:
    started = None
    if status.status == "running" and status.uptime is not None:
        started = timezone.now() - timedelta(seconds=status.uptime)
    return {
        # A create or restore under way (or interrupted) holds "lock: create": not a stopped container yet.
        "hostname": status.hostname,
        "status": "creating" if status.lock == "create" else status.status,
        "unprivileged": status.unprivileged,
        "paused": bool(status.paused),
        "config": {
            **config.current.values,
            **(
                {"description": config.current.description}  # shown in Options
                if config.current.description
                else {}
            ),
        },
        "digest": config.digest(),
        "started_at": started,
        "init": status.init or "",
        "ipv4": status.ipv4 or [],
        "ipv6": status.ipv6 or [],
        "memory_used": status.memory_bytes,
        "memory_limit": status.memory_limit_bytes,
    }


def node_fields(ctid: int) -> dict:
    """What the node says of one container, as the row's fields; raises ``NotFound`` when it has no such one."""
    status = node_engine().status(ctid)
    config = node_engine().config(ctid)
    snapshots = [info.as_dict() for info in node_engine().list_snapshots(ctid)]
    return {**container_fields(status, config), "snapshots": snapshots, "os_release": os_release(ctid, status)}


def sync_container(node: Node, ctid: int) -> Container | None:
    """Mirror one container from the node into the database; delete the row if the node has no such container.

    A container a migration is bringing in is not this node's until it commits: left alone (its row stays
    its source node's, and must not be deleted here should the migration fail)."""
    from engine.migrate.recover import is_incoming

    if is_incoming(node_engine(), ctid):
        return None
    try:
        fields = node_fields(ctid)
    except NotFound:
        deleted, _ = Container.objects.filter(node=node, ctid=ctid).exclude(status=Container.Status.CREATING).delete()
        if deleted:
            publish([f"/ct/{ctid}", node.path], {"type": "ct.removed", "ctid": ctid})
        return None
    container, _ = Container.objects.update_or_create(ctid=ctid, defaults={"node": node, **fields})
    publish([container.path, node.path], {"type": "ct.status", "ct": container_event(container)})
    return container


_os_releases: dict[int, tuple[tuple, dict]] = {}  # ctid -> ((pid, config mtime), what os-release said)


def os_release(ctid: int, status) -> dict:
    """The container's os-release (engine.templates.eol), read again only when it starts or its config changes."""
    from engine.templates.eol import container_os_release

    try:
        stamp = (status.pid, node_engine().layout.config_path(ctid).stat().st_mtime_ns)
    except OSError:
        stamp = (status.pid, None)
    cached = _os_releases.get(ctid)
    if cached is None or cached[0] != stamp:
        cached = _os_releases[ctid] = (stamp, container_os_release(node_engine(), ctid))
    return cached[1]


def container_event(container: Container) -> dict:
    return {
        "ctid": container.ctid,
        "node": container.node.name,
        "hostname": container.hostname,
        "status": container.status,
        "paused": container.paused,
        "uptime": container.uptime,
        "ipv4": container.ipv4,
        "ipv6": container.ipv6,
        "cpu": container.cpu,
        "memory_used": container.memory_used,
        "memory_limit": container.memory_limit,
        "tags": container.tags,
    }


def sync_all(node: Node) -> int:
    """Mirror every container of this node; rows for containers the node no longer has are removed (the
    agent's start, the resync job, recovery; the tick mirrors what changed, ``tasks.mirror_changes``)."""
    on_node = set(node_engine().ids())
    for ctid in sorted(on_node):
        sync_container(node, ctid)
    stale = Container.objects.filter(node=node).exclude(ctid__in=on_node).exclude(status=Container.Status.CREATING)
    for ctid in list(stale.values_list("ctid", flat=True)):
        sync_container(node, ctid)
    sync_backups(node)  # the archives of its dump directories (listed again only when they changed)
    return len(on_node)


def sync_templates(node: Node) -> None:
    """Mirror the node's local template store and the catalog its sources offer."""
    from engine.templates.cli import local_builds
    from engine.templates.store import TemplateStore
    from tasks.sources_mirror import sync_template_sources

    store = TemplateStore(node_engine().layout.root)
    with transaction.atomic():
        local = store.local()
        StoredTemplate.objects.filter(node=node).exclude(name__in=[t["name"] for t in local]).delete()
        for item in local:
            modified = datetime.fromtimestamp(os.stat(item["path"]).st_mtime, UTC)
            StoredTemplate.objects.update_or_create(
                node=node, name=item["name"], defaults={"size": item["size"], "modified": modified}
            )
        try:
            groups = store.available()
        except EngineError as exc:
            log.warning("template catalog of %s unreadable: %s", node, exc)
            groups = {}
        entries = [e for section in groups.values() for e in section] + local_builds()
        CatalogEntry.objects.filter(node=node).delete()
        CatalogEntry.objects.bulk_create(
            [
                CatalogEntry(
                    node=node,
                    source=e.source_id,
                    section=e.section,
                    name=e.name,
                    os=e.os,
                    version=e.version,
                    headline=e.headline[:255],
                    description=e.description,
                    size=getattr(e, "size", None),
                    buildable=e.source_id == "local",
                    trusted=e.source_id == "local" or store.trusted(e.source_id),
                )
                for e in entries
            ],
            ignore_conflicts=True,
        )
        sync_template_sources(node, store)  # tasks/sources_mirror.py
    publish([node.path], {"type": "templates", "node": node.name})


# ---- storages and bridges ------------------------------------------------------------------
def sync_storages(node: Node) -> None:
    """Mirror the node's storages (storage.cfg) with their usage."""
    from engine.storage import status as storage_status

    rows = storage_status(node_engine().layout.root)
    StorageMirror.objects.filter(node=node).exclude(name__in=[r["id"] for r in rows]).delete()
    for row in rows:
        StorageMirror.objects.update_or_create(
            node=node,
            name=row["id"],
            defaults={
                "type": row["type"],
                "content": row["content"],
                "total": row["total"] or 0,
                "used": row["used"] or 0,
                "enabled": row["status"] != "disabled",
                "enforces_size": row["enforces_size"],
            },
        )


def managed_bridges() -> list[dict]:
    """The bridges this node's interfaces file defines, with their allocation and whether each is up on the host
    (webui/nic_rights.py and the Network panel read it)."""
    from engine.network.bridges import NodeNetwork

    try:
        node = NodeNetwork(node_engine().layout.root)
        bridges = node.bridges().values()
    except EngineError as exc:  # a broken file: no managed bridge until it is fixed
        log.warning("cannot read the node's bridges: %s", exc)
        return []
    return [
        {
            "name": b.name,
            "ipv4": str(b.address) if b.address else None,
            "ipv6": str(b.address6) if b.address6 else None,
            "pool": f"{b.pool[0]}-{b.pool[1]}" if b.pool else None,
            "dhcp": f"{b.dhcp[0]}-{b.dhcp[1]}" if b.dhcp else None,
            "ports": b.ports,
            "vlan_aware": b.vlan_aware,
            "vids": b.vids if b.vlan_aware else None,
            "mtu": b.mtu,
            "nat": b.nat,
            "active": node.present(b.name),
        }
        for b in bridges
    ]


def host_interfaces() -> list[dict]:
    """The host's other interfaces, for the Network panel's list and its ports pick list (name, kind, bridge)."""
    from engine.network.bridges import SYS_NET

    rows = []
    for entry in sorted(SYS_NET.iterdir()) if SYS_NET.is_dir() else []:
        name = entry.name
        if name == "lo" or name.startswith(("veth", "ifb")):
            continue
        master = entry / "master"
        rows.append(
            {
                "name": name,
                "kind": "bridge"
                if (entry / "bridge").is_dir()
                else "physical"
                if (entry / "device").exists()
                else "virtual",
                "master": master.resolve().name if master.exists() else None,
            }
        )
    return rows


def sync_network(node: Node) -> None:
    """After a network job: the node's bridges and interfaces into its row at once (the tick does it too)."""
    with transaction.atomic():
        row = Node.objects.select_for_update().get(pk=node.pk)
        row.info = {**(row.info or {}), "bridges": managed_bridges(), "interfaces": host_interfaces()}
        row.save(update_fields=["info"])
    publish([node.path], {"type": "network", "node": node.name})


# ---- backup archives --------------------------------------------------------------------------
def backup_storages() -> dict[str, Path]:
    """Storages of this node that hold backups, and their dump directories (not made here)."""
    result = {}
    for storage_id, definition in node_engine().storages.definitions().items():
        if "backup" in definition.content and not definition.disabled:
            result[storage_id] = Path(definition.path) / "dump"
    return result


def sync_backups(node: Node, force: bool = False) -> None:
    """Mirror this node's archives; a dump directory is listed again only when it changed (or ``force``)."""
    from engine.backup.names import list_backups

    storages = backup_storages()
    with transaction.atomic():
        # One listing at a time per node: a tick must not store an older listing over a job's newer one.
        Node.objects.select_for_update().filter(pk=node.pk).first()
        changed = _sync_locked(node, storages, force, list_backups)
    if changed:
        publish(
            [node.path, *(f"/ct/{c}" for c in sorted(changed))],
            {"type": "backups", "node": node.name, "ctids": sorted(changed)},
        )


def _sync_locked(node: Node, storages: dict[str, Path], force: bool, list_backups) -> set[int]:
    stale = BackupArchive.objects.filter(node=node).exclude(storage__in=list(storages))
    changed = set(stale.values_list("ctid", flat=True))
    stale.delete()
    for storage, dumpdir in storages.items():
        key = (node.name, storage)
        try:
            mtime = dumpdir.stat().st_mtime_ns
        except FileNotFoundError:
            mtime = -1
        previous = _listed.get(key)
        if not force and previous and previous[0] == mtime and time.monotonic() - previous[1] < FULL_RESYNC_AFTER:
            continue
        try:
            found = list_backups(dumpdir) if mtime != -1 else []
        except EngineError as exc:
            log.warning("dump directory %s of storage %s unreadable: %s", dumpdir, storage, exc)
            continue
        _listed[key] = (mtime, time.monotonic())
        changed |= _store(node, storage, found)
    return changed


def _store(node: Node, storage: str, found) -> set[int]:
    """Write one dump directory's listing; returns the IDs whose archives changed."""
    rows = {r.name: r for r in BackupArchive.objects.filter(node=node, storage=storage)}
    changed: set[int] = set()
    with transaction.atomic():
        names = {b.name for b in found}
        gone = [r for name, r in rows.items() if name not in names]
        for row in gone:
            changed.add(row.ctid)
        BackupArchive.objects.filter(pk__in=[r.pk for r in gone]).delete()
        for b in found:
            fields = {
                "ctid": b.ctid,
                "time": datetime.fromtimestamp(b.time, UTC),
                "size": b.size,
                "format": b.compression,
                "protected": b.protected,
                "notes": b.notes,
            }
            row = rows.get(b.name)
            if row is not None and all(getattr(row, k) == v for k, v in fields.items()):
                continue
            changed.add(b.ctid)
            BackupArchive.objects.update_or_create(
                node=node, storage=storage, name=b.name, defaults={**fields, "seen": timezone.now()}
            )
    return changed
