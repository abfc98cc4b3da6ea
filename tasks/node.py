"""The node's pulse: heartbeat, sampled metrics, the tick that runs them with the mirror, and the resync job."""

from __future__ import annotations

import logging
import os
import shutil
import time

from django.db import transaction
from django.utils import timezone

from engine.errors import NotFound
from tasks.base import JobContext, JobTask
from tasks.celery import app
from tasks.firewall import read_firewall_log, sync_firewall
from tasks.mirror import host_interfaces, managed_bridges, sync_all, sync_container, sync_storages, sync_templates
from tasks.runtime import node_engine, this_node
from tasks.safety import sweep
from webui.live import publish
from webui.models import Container, MetricSample, Node

log = logging.getLogger(__name__)


# ---- heartbeat and metrics -----------------------------------------------------------------
def heartbeat(node: Node) -> None:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    kept = (Node.objects.filter(pk=node.pk).values_list("info", flat=True).first() or {}).get("fwlog", [])
    Node.objects.filter(pk=node.pk).update(
        last_seen=timezone.now(),
        cpus=os.cpu_count() or 1,
        memory_total=memory,
        info={
            "fwlog": kept,
            "kernel": os.uname().release,
            "cgroups": type(node_engine().cgroups).__name__,
            "bridges": managed_bridges(),
            "interfaces": host_interfaces(),
        },
    )


_last_counters: dict[str, tuple[float, float, float, float]] = {}  # scope -> (time, cpu seconds, rx, tx)


def _rates(scope: str, *counters: float) -> tuple[float, ...]:
    """Per-second rates of ``counters`` (CPU seconds, bytes...) since this scope's previous reading."""
    now = time.monotonic()
    previous = _last_counters.get(scope)
    _last_counters[scope] = (now, *counters)
    if not previous or now <= previous[0] or len(previous) != len(counters) + 1:
        return (0.0,) * len(counters)
    elapsed = now - previous[0]
    return tuple(max(0.0, (value - before) / elapsed) for value, before in zip(counters, previous[1:], strict=True))


def _root_usage(pid: int | None) -> tuple[int, int]:
    """Used and total bytes of the file system under a running container's root (its own view of ``/``)."""
    if not pid:
        return 0, 0
    try:
        st = os.statvfs(f"/proc/{pid}/root")
    except OSError:
        return 0, 0
    return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_blocks * st.f_frsize


def record_metric(scope: str, when: float, **values) -> None:
    """Fold one reading into each resolution's bucket (a running average) and drop buckets past the window."""
    for step, keep in MetricSample.RESOLUTIONS.values():
        bucket = int(when) - int(when) % step
        with transaction.atomic():
            row, created = MetricSample.objects.select_for_update().get_or_create(
                scope=scope, step=step, ts=bucket, defaults={**values, "samples": 1}
            )
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
    disk = shutil.disk_usage(node_engine().layout.root)
    used, total = _host_memory()
    (cpu,) = _rates(f"node/{node.name}", _host_cpu_seconds())
    record_metric(
        f"node/{node.name}", when, cpu=cpu, memory=used, memory_total=total, disk_used=disk.used, disk_total=disk.total
    )
    running = Container.objects.filter(node=node, status=Container.Status.RUNNING)
    for container in running:
        try:
            status = node_engine().status(container.ctid)
        except NotFound:
            continue
        if status.status != "running":
            sync_container(node, container.ctid)
            continue
        rx = sum(c.get("rx_bytes", 0) for c in (status.net or {}).values())
        tx = sum(c.get("tx_bytes", 0) for c in (status.net or {}).values())
        scope = f"ct/{container.ctid}"
        cpu, net_in, net_out, io_read, io_write = _rates(
            scope, (status.cpu_ns or 0) / 1e9, rx, tx, status.io_read_bytes or 0, status.io_write_bytes or 0
        )
        disk_used, disk_total = _root_usage(status.pid)
        record_metric(
            scope,
            when,
            cpu=cpu,
            memory=status.memory_bytes or 0,
            memory_total=status.memory_limit_bytes or 0,
            net_in=net_in,
            net_out=net_out,
            io_read=io_read,
            io_write=io_write,
            disk_used=disk_used,
            disk_total=disk_total,
        )
        Container.objects.filter(pk=container.pk).update(
            cpu=cpu, memory_used=status.memory_bytes, ipv4=status.ipv4 or [], ipv6=status.ipv6 or []
        )
        publish(
            [container.path],
            {
                "type": "ct.metrics",
                "ctid": container.ctid,
                "ts": when,
                "cpu": cpu,
                "memory": status.memory_bytes,
                "memory_total": status.memory_limit_bytes,
                "net_in": net_in,
                "net_out": net_out,
                "io_read": io_read,
                "io_write": io_write,
                "disk_used": disk_used,
                "disk_total": disk_total,
            },
        )
    publish(
        [node.path],
        {
            "type": "node.metrics",
            "node": node.name,
            "ts": when,
            "cpu": cpu,
            "memory": used,
            "memory_total": total,
            "disk_used": disk.used,
            "disk_total": disk.total,
        },
    )


def restart_exited(node: Node) -> None:
    """Containers with a restart policy whose PID 1 ended by itself: a start job each (shown in the task log)."""
    from engine.oci.restart import due
    from webui.models.queue import JobRefused, submit

    for ctid in due(node_engine().node):
        try:
            submit("vzstart", node, f"/ct/{ctid}", str(ctid), params={"reason": "restart policy"})
        except JobRefused:
            continue  # one is queued or running already


def ensure_lxcfs() -> None:
    """Start the node's lxcfs if it is not serving (at the agent's start and each tick): containers started
    while it was away run without its views and said so; it must not stay away."""
    from engine import lxcfs
    from engine.errors import EngineError

    if os.environ.get("CAISSON_LXCFS_AUTOSTART", "1") == "0":
        return
    try:
        if lxcfs.ensure(log=node_engine().layout.logs / "lxcfs.log"):
            log.warning("lxcfs was not serving at %s; started it", lxcfs.mountpoint())
    except EngineError as exc:
        log.warning("lxcfs: %s", exc)


@app.task(name="caisson.node.tick", ignore_result=True)
def tick() -> None:
    """Every few seconds on each node: heartbeat, metrics, and a mirror of changes made outside Caisson."""
    node = this_node()
    heartbeat(node)
    ensure_lxcfs()
    try:
        sample(node)
        restart_exited(node)
        sync_all(node)
        sync_storages(node)
        sync_firewall(node)
        read_firewall_log(node)
        sweep()  # expired safety snapshots (tasks.safety), at most once a minute
    except Exception:  # noqa: BLE001 - one bad reading must not stop the heartbeat
        log.exception("sampling on %s failed", node)
    try:
        from tasks.recovery import recover_node

        if recover_node(node, at_start=False):
            sync_all(node)  # locks released, containers started again: the mirror shows it now
    except Exception:  # noqa: BLE001 - nor must recovery
        log.exception("recovery on %s failed", node)


class Resync(JobTask):
    name = "caisson.node.resync"

    def perform(self, ctx: JobContext) -> str:
        node = this_node()
        count = sync_all(node)
        sync_templates(node)
        sync_storages(node)
        sync_firewall(node)
        read_firewall_log(node)
        return f"{count} containers mirrored"


app.register_task(Resync())
