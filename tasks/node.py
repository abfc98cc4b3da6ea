"""The node side of the mirror: heartbeat, resync of containers and templates, sampled metrics."""
from __future__ import annotations

import logging
import os
import shutil
import time
from datetime import UTC, datetime, timedelta
from functools import cache

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from engine.errors import EngineError, NotFound
from tasks.base import JobContext, JobTask
from tasks.celery import app
from webui.live import publish
from webui.models import CatalogEntry, Container, MetricSample, Node, StorageMirror, StoredTemplate

log = logging.getLogger(__name__)


@cache
def engine():
    """This process's engine; it reaps the inits of containers it started (see Engine's ``reaper``)."""
    from engine.lifecycle import Engine

    return Engine(reaper=True)


def this_node() -> Node:
    node, _ = Node.objects.get_or_create(name=settings.CAISSON_NODE)
    return node


# ---- containers ----------------------------------------------------------------------------
def container_fields(status, config) -> dict:
    started = None
    if status.status == "running" and status.uptime is not None:
        started = timezone.now() - timedelta(seconds=status.uptime)
    return {
        # A create or restore under way (or interrupted) holds "lock: create": not a stopped container yet.
        "hostname": status.hostname, "status": "creating" if status.lock == "create" else status.status,
        "unprivileged": status.unprivileged,
        "config": {**config.current.values, **({"description": config.current.description}  # shown in Options
                                                if config.current.description else {})},
        "digest": config.digest(), "started_at": started, "init": status.init or "",
        "ipv4": status.ipv4 or [], "ipv6": status.ipv6 or [], "memory_used": status.memory_bytes,
        "memory_limit": status.memory_limit_bytes,
    }


def sync_container(node: Node, ctid: int) -> Container | None:
    """Mirror one container from the node into the database; delete the row if the node has no such container."""
    try:
        status = engine().status(ctid)
        config = engine().config(ctid)
        snapshots = [info.as_dict() for info in engine().list_snapshots(ctid)]
    except NotFound:
        deleted, _ = Container.objects.filter(node=node, ctid=ctid).exclude(status=Container.Status.CREATING).delete()
        if deleted:
            publish([f"/ct/{ctid}", node.path], {"type": "ct.removed", "ctid": ctid})
        return None
    fields = {**container_fields(status, config), "snapshots": snapshots}
    container, _ = Container.objects.update_or_create(ctid=ctid, defaults={"node": node, **fields})
    publish([container.path, node.path], {"type": "ct.status", "ct": container_event(container)})
    return container


def container_event(container: Container) -> dict:
    return {"ctid": container.ctid, "node": container.node.name, "hostname": container.hostname,
            "status": container.status, "uptime": container.uptime, "ipv4": container.ipv4, "ipv6": container.ipv6,
            "cpu": container.cpu, "memory_used": container.memory_used, "memory_limit": container.memory_limit}


def sync_all(node: Node) -> int:
    """Mirror every container of this node; rows for containers the node no longer has are removed."""
    on_node = set(engine().ids())
    for ctid in sorted(on_node):
        sync_container(node, ctid)
    stale = Container.objects.filter(node=node).exclude(ctid__in=on_node).exclude(status=Container.Status.CREATING)
    for ctid in list(stale.values_list("ctid", flat=True)):
        sync_container(node, ctid)
    from tasks.backups import sync_backups  # backups import this module

    sync_backups(node)  # the archives of its dump directories (listed again only when they changed)
    return len(on_node)


def sync_templates(node: Node) -> None:
    """Mirror the node's local template store and the catalog its sources offer."""
    from engine.templates.__main__ import local_builds
    from engine.templates.store import TemplateStore
    from tasks.sources_mirror import sync_template_sources

    store = TemplateStore(engine().layout.root)
    with transaction.atomic():
        local = store.local()
        StoredTemplate.objects.filter(node=node).exclude(name__in=[t["name"] for t in local]).delete()
        for item in local:
            modified = datetime.fromtimestamp(os.stat(item["path"]).st_mtime, UTC)
            StoredTemplate.objects.update_or_create(node=node, name=item["name"],
                                                    defaults={"size": item["size"], "modified": modified})
        try:
            groups = store.available()
        except EngineError as exc:
            log.warning("template catalog of %s unreadable: %s", node, exc)
            groups = {}
        entries = [e for section in groups.values() for e in section] + local_builds()
        CatalogEntry.objects.filter(node=node).delete()
        CatalogEntry.objects.bulk_create([CatalogEntry(
            node=node, source=e.source_id, section=e.section, name=e.name, os=e.os, version=e.version,
            headline=e.headline[:255], description=e.description, size=getattr(e, "size", None),
            buildable=e.source_id == "local",
            trusted=e.source_id == "local" or store.trusted(e.source_id)) for e in entries],
            ignore_conflicts=True)
        sync_template_sources(node, store)  # tasks/sources_mirror.py
    publish([node.path], {"type": "templates", "node": node.name})


# ---- heartbeat and metrics -----------------------------------------------------------------
def sync_storages(node: Node) -> None:
    """Mirror the node's storages (storage.cfg) with their usage."""
    from engine.storage import status as storage_status

    rows = storage_status(engine().layout.root)
    StorageMirror.objects.filter(node=node).exclude(name__in=[r["id"] for r in rows]).delete()
    for row in rows:
        StorageMirror.objects.update_or_create(node=node, name=row["id"], defaults={
            "type": row["type"], "content": row["content"], "total": row["total"] or 0, "used": row["used"] or 0,
            "enabled": row["status"] != "disabled", "enforces_size": row["enforces_size"]})


def heartbeat(node: Node) -> None:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    Node.objects.filter(pk=node.pk).update(last_seen=timezone.now(), cpus=os.cpu_count() or 1, memory_total=memory,
                                           info={"kernel": os.uname().release,
                                                 "cgroups": type(engine().cgroups).__name__,
                                                 "bridges": managed_bridges()})


def managed_bridges() -> list[dict]:
    """The bridges this node's interfaces file defines, with their allocation (webui/nic_rights.py reads it)."""
    from engine.network.bridges import NodeNetwork

    try:
        bridges = NodeNetwork(engine().layout.root).bridges().values()
    except EngineError as exc:  # a broken file: no managed bridge until it is fixed
        log.warning("cannot read the node's bridges: %s", exc)
        return []
    return [{"name": b.name, "ipv4": str(b.address) if b.address else None,
             "ipv6": str(b.address6) if b.address6 else None,
             "pool": f"{b.pool[0]}-{b.pool[1]}" if b.pool else None,
             "dhcp": f"{b.dhcp[0]}-{b.dhcp[1]}" if b.dhcp else None} for b in bridges]


_last_counters: dict[str, tuple[float, float, float, float]] = {}  # scope -> (time, cpu seconds, rx, tx)


def _rates(scope: str, cpu_seconds: float, rx: float, tx: float) -> tuple[float, float, float]:
    now = time.monotonic()
    previous = _last_counters.get(scope)
    _last_counters[scope] = (now, cpu_seconds, rx, tx)
    if not previous or now <= previous[0]:
        return 0.0, 0.0, 0.0
    elapsed = now - previous[0]
    return (max(0.0, (cpu_seconds - previous[1]) / elapsed), max(0.0, (rx - previous[2]) / elapsed),
            max(0.0, (tx - previous[3]) / elapsed))


def record_metric(scope: str, when: float, **values) -> None:
    """Fold one reading into each resolution's bucket (a running average) and drop buckets past the window."""
    for step, keep in MetricSample.RESOLUTIONS.values():
        bucket = int(when) - int(when) % step
        with transaction.atomic():
            row, created = MetricSample.objects.select_for_update().get_or_create(
                scope=scope, step=step, ts=bucket, defaults={**values, "samples": 1})
            if not created:
                n = row.samples
                for key, value in values.items():
                    mean = (getattr(row, key) * n + value) / (n + 1)
                    setattr(row, key, round(mean) if isinstance(value, int) else mean)
                row.samples = n + 1
                row.save()
        MetricSample.objects.filter(scope=scope, step=step, ts__lt=bucket - step * keep).delete()


def _host_cpu_seconds() -> float:
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    busy = sum(int(v) for v in fields[:3]) + sum(int(v) for v in fields[5:8])  # user nice system irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def _host_memory() -> tuple[int, int]:
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            info[key] = int(value.split()[0]) * 1024
    return info["MemTotal"] - info.get("MemAvailable", info["MemFree"]), info["MemTotal"]


def sample(node: Node) -> None:
    """One reading of the node and of each running container, into the RRD-like history and the live view."""
    when = time.time()
    disk = shutil.disk_usage(engine().layout.root)
    used, total = _host_memory()
    cpu, _, _ = _rates(f"node/{node.name}", _host_cpu_seconds(), 0, 0)
    record_metric(f"node/{node.name}", when, cpu=cpu, memory=used, memory_total=total, disk_used=disk.used,
                  disk_total=disk.total)
    running = Container.objects.filter(node=node, status=Container.Status.RUNNING)
    for container in running:
        try:
            status = engine().status(container.ctid)
        except NotFound:
            continue
        if status.status != "running":
            sync_container(node, container.ctid)
            continue
        rx = sum(c.get("rx_bytes", 0) for c in (status.net or {}).values())
        tx = sum(c.get("tx_bytes", 0) for c in (status.net or {}).values())
        scope = f"ct/{container.ctid}"
        cpu, net_in, net_out = _rates(scope, (status.cpu_ns or 0) / 1e9, rx, tx)
        record_metric(scope, when, cpu=cpu, memory=status.memory_bytes or 0,
                      memory_total=status.memory_limit_bytes or 0, net_in=net_in, net_out=net_out)
        Container.objects.filter(pk=container.pk).update(cpu=cpu, memory_used=status.memory_bytes,
                                                         ipv4=status.ipv4 or [], ipv6=status.ipv6 or [])
        publish([container.path], {"type": "ct.metrics", "ctid": container.ctid, "ts": when, "cpu": cpu,
                                   "memory": status.memory_bytes, "memory_total": status.memory_limit_bytes,
                                   "net_in": net_in, "net_out": net_out})
    publish([node.path], {"type": "node.metrics", "node": node.name, "ts": when, "cpu": cpu, "memory": used,
                          "memory_total": total, "disk_used": disk.used, "disk_total": disk.total})


@app.task(name="caisson.node.tick", ignore_result=True)
def tick() -> None:
    """Every few seconds on each node: heartbeat, metrics, and a mirror of changes made outside Caisson."""
    node = this_node()
    heartbeat(node)
    try:
        sample(node)
        sync_all(node)
        sync_storages(node)
    except Exception:  # noqa: BLE001 - one bad reading must not stop the heartbeat
        log.exception("sampling on %s failed", node)


class Resync(JobTask):
    name = "caisson.node.resync"

    def perform(self, ctx: JobContext) -> str:
        node = this_node()
        count = sync_all(node)
        sync_templates(node)
        sync_storages(node)
        return f"{count} containers mirrored"


app.register_task(Resync())
