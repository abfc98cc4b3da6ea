"""The node's ``startall`` and ``stopall`` jobs (Proxmox's task types of the same names), and the agent's boot start.

Both run ``engine.boot`` on the node's containers: one log line per
container as it is started or stopped, the job failing, with the containers
named, when any of them failed (the others still go on, as a booting node
must bring up all it can). ``params``: ``vms`` (only these IDs), ``force``
(startall: every stopped container, not only ``onboot`` ones), ``timeout``
and ``force_stop`` (stopall: per container when its ``startup`` has no
``down``), ``boot`` (queued by the agent at the host's boot: left-over
``backup`` locks are removed first, as Proxmox's startall does at boot; no
backup can still be running then).

"First agent start since the host booted" is a marker in the run directory
(``CAISSON_RUN``, ``/run/caisson``: a tmpfs the boot empties) holding the
kernel's boot ID, so a run directory that is not a tmpfs still tells a
reboot (another boot ID) from a restart of the agent (the same one).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from engine import boot
from engine.errors import EngineError
from tasks.base import JobContext, JobTask
from tasks.celery import app
from tasks.mirror import sync_all
from tasks.runtime import node_engine, this_node

log = logging.getLogger(__name__)
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
MARKER = "guests-started"  # in the run directory: the boot ID whose startall was queued


class NodePowerJob(JobTask):
    abstract = True

    def ctids(self, ctx: JobContext) -> list[int] | None:
        vms = ctx.params.get("vms")
        return [int(v) for v in vms] if vms else None

    def report(self, ctx: JobContext, verb: str):
        def say(outcome: boot.Outcome) -> None:
            if outcome.ok:
                ctx.log(f"CT {outcome.ctid}: {outcome.message}")
            else:
                ctx.log(f"CT {outcome.ctid}: {verb} failed: {outcome.message}")
            ctx.check_cancel()

        return say

    @staticmethod
    def verdict(outcomes: list[boot.Outcome], verb: str) -> str:
        failed = [o.ctid for o in outcomes if not o.ok]
        if failed:
            raise EngineError(f"{verb} failed for CT {', '.join(map(str, failed))} (see the log)")
        done = sum(1 for o in outcomes if o.ok and o.action != "skip")
        return f"{done} container(s) {'started' if verb == 'start' else 'stopped'}"

    def after(self, ctx: JobContext) -> None:
        sync_all(this_node())


class StartAll(NodePowerJob):
    name = "caisson.node.startall"

    def perform(self, ctx: JobContext) -> str:
        engine = node_engine()
        if ctx.params.get("boot"):
            remove_backup_locks(ctx, engine, self.ctids(ctx))

        def wait(seconds: float) -> None:  # the ``up`` delay, cancellable
            ctx.log(f"waiting {seconds:g} s (startup delay)")
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                ctx.check_cancel()
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

        outcomes = boot.start_all(
            engine, self.ctids(ctx), force=bool(ctx.params.get("force")), report=self.report(ctx, "start"), sleep=wait
        )
        return self.verdict(outcomes, "start")


class StopAll(NodePowerJob):
    name = "caisson.node.stopall"

    def perform(self, ctx: JobContext) -> str:
        timeout = ctx.params.get("timeout")
        outcomes = boot.stop_all(
            node_engine(),
            self.ctids(ctx),
            timeout=None if timeout is None else float(timeout),
            force_stop=bool(ctx.params.get("force_stop", True)),
            report=self.report(ctx, "stop"),
        )
        return self.verdict(outcomes, "stop")


def remove_backup_locks(ctx: JobContext, engine, ctids: list[int] | None) -> None:
    """A backup the power loss interrupted left its lock; no backup runs at boot, so it goes (as in Proxmox)."""
    for ctid in ctids or engine.ids():
        try:
            if engine.config(ctid).get("lock") == "backup":
                engine.unlock(ctid)
                ctx.log(f"warning: removed the left-over backup lock of CT {ctid}")
        except EngineError as exc:
            ctx.log(f"warning: CT {ctid}: {exc}")


for job_class in (StartAll, StopAll):
    app.register_task(job_class())


# ---- the agent's start: once per host boot ---------------------------------------------------------------
def current_boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return "unknown"


def first_start_since_boot(run_dir: Path) -> bool:
    """Whether this is the first agent start since the host booted: the marker is missing or names another boot."""
    try:
        return (run_dir / MARKER).read_text().strip() != current_boot_id()
    except FileNotFoundError:
        return True


def queue_boot_startall(node, run_dir: Path | None = None) -> object | None:
    """Queue the node's ``startall`` at the first agent start since the host booted; then mark this boot."""
    from webui.models.queue import submit

    run_dir = Path(run_dir or node_engine().layout.run)
    if not first_start_since_boot(run_dir):
        return None
    node.refresh_from_db()  # its heartbeat was just written: online
    try:
        job = submit("startall", node, node.path, "", params={"boot": True})
    except Exception:  # noqa: BLE001 - the agent must still come up; its next start tries again
        log.exception("host boot: the startall job could not be queued")
        return None
    mark_this_boot(run_dir)
    log.info("host boot: queued startall (job %s)", job.pk)
    return job


def mark_this_boot(run_dir: Path) -> None:
    """Record that this boot's startall was queued (written whole: a crash never leaves half a boot ID)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    marker = run_dir / f".{MARKER}.{os.getpid()}"
    marker.write_text(current_boot_id() + "\n")
    marker.replace(run_dir / MARKER)
