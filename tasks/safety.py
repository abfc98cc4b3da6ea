"""Safety snapshots: taken by the node before a risky change, expiring after a set time, one click to go back.

Before a rollback, a restore over an existing container (whose snapshots
and old volumes the restore then keeps, ``keep_snapshots``), a package
upgrade (``vzupgrade``), and a config change the user marks risky
(``risky`` on ``PUT /api/containers/<id>/config``), the job snapshots the
container as it is, named ``pre-<change>-<n>``, with a description marker
(``engine.autosnap``, policy number 0) that says when it expires
(``CAISSON_SAFETY_SNAPSHOT_EXPIRY``, Incus's units, ``1d`` by default).  The
job's result names it (``params["result"]["safety_snapshot"]``), and the task
page offers to roll back to it.  A storage that cannot snapshot is said so
in the log and the change goes ahead, as Proxmox's vzdump falls back.  The
node's tick deletes expired snapshots, these and the policies' (at most once
a minute, ``CAISSON_SNAPSHOT_SWEEP_INTERVAL``); a snapshot with linked clones
stays, and is tried again.
"""

from __future__ import annotations

import logging
import os
import time

from django.conf import settings
from django.utils import timezone

from engine.autosnap import expires_at, marker, owned, snapshot_name
from engine.errors import EngineError, NotSupported
from tasks.base import JobContext
from tasks.runtime import node_engine
from webui.models import Job

log = logging.getLogger(__name__)
SAFETY = 0  # the marker's policy number of safety snapshots (policies count from 1)
_last_sweep = [time.monotonic()]  # the first sweep comes one interval after the agent starts


def sweep_interval() -> float:
    """Seconds between two sweeps of expired snapshots on a node (``CAISSON_SNAPSHOT_SWEEP_INTERVAL``, 60)."""
    return float(os.environ.get("CAISSON_SNAPSHOT_SWEEP_INTERVAL", "") or 60)


def expiry() -> str:
    return getattr(settings, "CAISSON_SAFETY_SNAPSHOT_EXPIRY", "") or "1d"


def before_risky(ctx: JobContext, ctid: int, change: str) -> str | None:
    """Snapshot ``ctid`` before ``change`` (a word: rollback, config); returns its name, None if not taken."""
    engine = node_engine()
    now = timezone.now()
    expires = expires_at(now, expiry())
    try:
        name = snapshot_name(f"pre-{change}-%d", now, {s.name for s in engine.list_snapshots(ctid)})
        engine.snapshot(ctid, name, marker(SAFETY, expires) + f"\nbefore {change} (task {ctx.job.upid})")
    except NotSupported as exc:
        ctx.log(f"no safety snapshot: {exc}; the change goes ahead without one")
        return None
    ctx.log(f"safety snapshot '{name}' taken; it expires {expires.isoformat() if expires else 'never'}")
    ctx.job.params = {**ctx.params, "result": {**(ctx.params.get("result") or {}), "safety_snapshot": name}}
    Job.objects.filter(pk=ctx.job.pk).update(params=ctx.job.params)
    return name


def _volumes_of_snapshot(engine, ctid: int, name: str) -> set[str]:
    from engine.snapconfig import storage_volumes

    section = engine.config(ctid).snapshots.get(name)
    return {volid for _, volid in storage_volumes(section)} if section is not None else set()


def _drop_released(engine, ctid: int, held: set[str]) -> None:
    """Destroy the unused volumes that only the deleted snapshot held: the old root a restore over the container
    or a change of template kept for its safety snapshot (``keep_snapshots``)."""
    from engine.snapconfig import storage_volumes

    config = engine.config(ctid)
    still = {volid for section in config.snapshots.values() for _, volid in storage_volumes(section)}
    keys = [k for k, v in config.current.values.items() if k.startswith("unused") and v in held - still]
    if keys:
        engine.set(ctid, {}, keys)
        log.info("CT %s: volumes only its expired snapshot held destroyed: %s", ctid, ", ".join(keys))


def sweep(force: bool = False) -> list[tuple[int, str]]:
    """Delete this node's expired snapshots that carry an expiry marker: safety snapshots, and a policy's
    (also of containers the policy no longer selects, or of a policy deleted since: the expiry was fixed
    when the snapshot was taken, as in Incus).  Returns ``(ctid, name)`` of those deleted."""
    if not force and time.monotonic() - _last_sweep[0] < sweep_interval():
        return []
    _last_sweep[0] = time.monotonic()
    engine, now, deleted = node_engine(), timezone.now(), []
    for ctid in engine.ids():
        try:
            for snap in owned(None, engine.list_snapshots(ctid)):
                if snap.expires is not None and snap.expires <= now:
                    held = _volumes_of_snapshot(engine, ctid, snap.name)
                    engine.delete_snapshot(ctid, snap.name)
                    deleted.append((ctid, snap.name))
                    log.info("CT %s: expired snapshot '%s' deleted", ctid, snap.name)
                    _drop_released(engine, ctid, held)
        except EngineError as exc:  # locked, busy, linked clones: the next sweep tries again
            log.info("CT %s: safety snapshots not swept: %s", ctid, exc)
    return deleted
