"""The node's pulse: heartbeat, sampled metrics, the tick that runs them with the mirror, and the resync job."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from engine.errors import NotFound
from tasks.base import JobContext, JobTask
from tasks.celery import app
from tasks.firewall import read_firewall_log, sync_firewall
from tasks.mirror import host_interfaces, managed_bridges, sync_all, sync_container, sync_storages, sync_templates
from tasks.mirror_changes import sync_tick
from tasks.presence import announce_offline, announce_return
from tasks.runtime import node_engine, this_node
from tasks.safety import sweep
from webui.live import publish_many
from webui.models import Container, MetricSample, Node

log = logging.getLogger(__name__)


# ---- heartbeat and metrics -----------------------------------------------------------------
def load_average() -> list[float]:
    """The host's 1, 5 and 15 minute load averages, as ``uptime`` shows them."""
    return [round(x, 2) for x in os.getloadavg()]


def heartbeat(node: Node) -> None:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    info, previous_seen = Node.objects.filter(pk=node.pk).values_list("info", "last_seen").first() or ({}, None)
    kept = (info or {}).get("fwlog", [])
    Node.objects.filter(pk=node.pk).update(
        last_seen=timezone.now(),
        cpus=os.cpu_count() or 1,
        memory_total=memory,
        info={
            "fwlog": kept,
            "kernel": os.uname().release,
            "load": load_average(),  # for the datacenter view's node list
            "cgroups": type(node_engine().cgroups).__name__,
            "bridges": managed_bridges(),
            "interfaces": host_interfaces(),
        },
    )
    announce_return(node, previous_seen)


METRIC_FIELDS = ("cpu", "memory", "memory_total", "net_in", "net_out", "io_read", "io_write", "disk_used", "disk_total")
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


def _fold(row: MetricSample, values: dict) -> None:
    """Add one reading to a bucket's running average (integers stay integers, rounded half to even)."""
    n = row.samples
    for key, value in values.items():
        mean = (getattr(row, key) * n + value) / (n + 1)
        setattr(row, key, round(mean) if isinstance(value, int) else mean)
    row.samples = n + 1


def record_metrics(when: float, readings: dict[str, dict]) -> None:
    """Fold one reading per scope into each resolution's bucket and drop buckets past the window.

    The cost per tick is a fixed number of statements whatever the number of scopes (containers): one
    locking SELECT of the buckets this tick touches, one bulk ``INSERT ... ON CONFLICT DO UPDATE`` of all of
    them, one DELETE of the expired ones, in one transaction. The averages are computed here, as before, so
    the graphs' data is the same as when each reading was written on its own. One agent writes a scope
    (its node and its containers); the lock serialises a tick that overlaps the previous one on the buckets
    both update, and where both create a bucket the later tick's reading replaces the earlier one (a
    reading lost, never a wrong average).
    """
    if not readings:
        return
    buckets = {step: (int(when) - int(when) % step, keep) for step, keep in MetricSample.RESOLUTIONS.values()}
    current, stale = Q(), Q()
    for step, (ts, keep) in buckets.items():
        current |= Q(step=step, ts=ts)
        stale |= Q(step=step, ts__lt=ts - step * keep)
    scopes = list(readings)
    with transaction.atomic():
        found = MetricSample.objects.select_for_update().filter(current, scope__in=scopes)
        existing = {(row.scope, row.step): row for row in found}
        rows = []
        for scope, values in readings.items():
            for step, (ts, _) in buckets.items():
                row = existing.get((scope, step))
                if row is None:
                    row = MetricSample(scope=scope, step=step, ts=ts, samples=1, **values)
                else:
                    _fold(row, values)
                rows.append(row)
        MetricSample.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["scope", "step", "ts"],
            update_fields=["samples", *METRIC_FIELDS],
        )
        MetricSample.objects.filter(stale, scope__in=scopes).delete()


def record_metric(scope: str, when: float, **values) -> None:
    """One scope's reading (see :func:`record_metrics`)."""
    record_metrics(when, {scope: values})


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
    readings = {
        f"node/{node.name}": dict(cpu=cpu, memory=used, memory_total=total, disk_used=disk.used, disk_total=disk.total)
    }
    sampled, events = [], []
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
        ct_cpu, net_in, net_out, io_read, io_write = _rates(
            scope, (status.cpu_ns or 0) / 1e9, rx, tx, status.io_read_bytes or 0, status.io_write_bytes or 0
        )
        disk_used, disk_total = _root_usage(status.pid)
        readings[scope] = dict(
            cpu=ct_cpu,
            memory=status.memory_bytes or 0,
            memory_total=status.memory_limit_bytes or 0,
            net_in=net_in,
            net_out=net_out,
            io_read=io_read,
            io_write=io_write,
            disk_used=disk_used,
            disk_total=disk_total,
        )
        container.cpu, container.memory_used = ct_cpu, status.memory_bytes
        container.ipv4, container.ipv6 = status.ipv4 or [], status.ipv6 or []
        sampled.append(container)
        events.append(
            (
                container.path,
                {
                    "type": "ct.metrics",
                    "ctid": container.ctid,
                    "ts": when,
                    **readings[scope],
                    "memory": status.memory_bytes,
                    "memory_total": status.memory_limit_bytes,
                },
            )
        )
    write_sample(when, readings, sampled)
    events.append(
        (
            node.path,
            {
                "type": "node.metrics",
                "node": node.name,
                "ts": when,
                "cpu": cpu,
                "memory": used,
                "memory_total": total,
                "disk_used": disk.used,
                "disk_total": disk.total,
                **node_load(node, len(sampled)),
            },
        )
    )
    publish_many([([path], event) for path, event in events])


def node_load(node: Node, running: int) -> dict:
    """The datacenter view's node row besides the metrics: load average and container counts (one COUNT)."""
    return {
        "load": load_average(),
        "running": running,
        "containers": Container.objects.filter(node=node).count(),
    }


def write_sample(when: float, readings: dict[str, dict], containers: list[Container]) -> None:
    """A tick's database writes: the metric buckets and each sampled container's last reading, a fixed
    number of statements whatever the number of containers."""
    record_metrics(when, readings)
    if not containers:
        return
    if connection.vendor != "postgresql":  # the embedded single node (SQLite): few containers
        Container.objects.bulk_update(containers, ["cpu", "memory_used", "ipv4", "ipv6"], batch_size=500)
        return
    # Django's bulk_update builds a CASE per column per row, which costs more than the metrics themselves at
    # a thousand rows; one UPDATE ... FROM unnest(arrays) is a single short statement with four parameters.
    table = Container._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS c SET cpu = v.cpu, memory_used = v.memory, ipv4 = v.ipv4::jsonb, ipv6 = v.ipv6::jsonb"
            " FROM unnest(%s::bigint[], %s::float8[], %s::bigint[], %s::text[], %s::text[])"
            " AS v(id, cpu, memory, ipv4, ipv6) WHERE c.id = v.id",
            [
                [c.pk for c in containers],
                [c.cpu for c in containers],
                [c.memory_used for c in containers],
                [json.dumps(c.ipv4) for c in containers],
                [json.dumps(c.ipv6) for c in containers],
            ],
        )


def restart_exited(node: Node) -> None:
    """Containers with a restart policy whose PID 1 ended by itself, or whose init asked for a restart (``reboot``
    inside): a start job each (shown in the task log)."""
    from engine.oci.restart import due
    from webui.models.queue import JobRefused, submit

    for ctid, reason in due(node_engine().node).items():
        try:
            submit("vzstart", node, f"/ct/{ctid}", str(ctid), params={"reason": reason})
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


def tune_cgroups() -> None:
    """Let cgroup moves skip the kernel's RCU grace period (engine.cgroups.tuning), once at the agent's start:
    each start and each exec moves a process into a container's cgroups."""
    from engine.cgroups import tuning

    if not tuning.wanted():
        return
    try:
        point = tuning.favor_dynamic_moves()
    except OSError as exc:
        log.warning("cgroup moves keep the kernel's default (%s): %s", tuning.OPTION, exc)
    else:
        if point:
            log.info("cgroup2 at %s remounted with %s: cgroup moves no longer wait", point, tuning.OPTION)


@app.task(name="caisson.node.tick", ignore_result=True)
def tick() -> None:
    """Every few seconds on each node: heartbeat, metrics, and a mirror of changes made outside Caisson."""
    node = this_node()
    heartbeat(node)
    ensure_lxcfs()
    try:
        sample(node)
        restart_exited(node)
        sync_tick(node)  # only the containers that changed are written and published
        sync_storages(node)
        sync_firewall(node)
        read_firewall_log(node)
        sweep()  # expired safety snapshots (tasks.safety), at most once a minute
    except Exception:  # noqa: BLE001 - one bad reading must not stop the heartbeat
        log.exception("sampling on %s failed", node)
    try:
        announce_offline()  # other nodes whose heartbeats stopped: the live pages mark them
    except Exception:  # noqa: BLE001 - a lost announcement leaves the pages' own timer
        log.exception("looking for silent nodes failed")
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
