"""A protection policy's scheduled snapshots: beat's check, one run per node, expiry, retention, notifications.

Beat sends ``caisson.protection.check`` for each policy with a snapshot or
a restore test schedule; the check claims each due run as a backup job's is
claimed (``tasks.backup_jobs.claim_slot``: one run per due time whatever the
number of beats, none twice after the clock goes back) and queues one
``snapshotjob`` (or ``restoretest``, on the restore tests' own calendar) per
node holding a selected container.

The run, on its node, goes through the policy's containers there one after
the other: a stopped one is left out unless the policy says otherwise (as
Incus's ``snapshots.schedule.stopped``); each gets a snapshot named from the
pattern whose description marks it as the policy's with its expiry time
(``engine.autosnap``); then the policy's own snapshots of that container
that have expired, or that the keep-* rules do not keep, are deleted.
Snapshots the policy did not take are never touched.  A container's failure
(locked, a storage without snapshots, a snapshot with linked clones) is
reported and the run goes on with the next; the run fails if any did, and
the policy's notification targets are told.
"""

from __future__ import annotations

import logging

from django.db import close_old_connections
from django.utils import timezone

from engine.autosnap import expires_at, marker, owned, snapshot_name, to_remove
from engine.backup.prune import PruneOptions
from engine.errors import EngineError
from tasks.backup_jobs import claim_slot
from tasks.base import JobContext, JobTask
from tasks.celery import app
from tasks.mirror import sync_container
from tasks.notify import notify
from tasks.runtime import node_engine, this_node
from webui.models import BackupArchive, Container, ProtectionPolicy, RestoreTest

log = logging.getLogger(__name__)


@app.task(name="caisson.protection.check", ignore_result=True)
def check(policy: int) -> None:
    close_old_connections()
    claim_slot(ProtectionPolicy, policy, "snapshot_schedule")
    claim_slot(
        ProtectionPolicy,
        policy,
        "restore_test_schedule",
        due_field="restore_test_next_due",
        slot_field="restore_test_last_slot",
        kind="restoretest",
    )


def protect(policy: ProtectionPolicy, ctid: int, now, log_line) -> dict:
    """One container's snapshot and clean-up; a result row (``status`` ok, skipped or error)."""
    from webui.models.backups import schedule_zone

    engine = node_engine()
    row = {"ctid": ctid, "status": "ok", "snapshot": "", "removed": [], "message": ""}
    try:
        if engine.status(ctid, stats=False).status != "running" and not policy.snapshot_stopped:
            row.update(status="skipped", message="stopped (the policy leaves stopped containers out)")
            return row
        existing = {s.name for s in engine.list_snapshots(ctid)}
        name = snapshot_name(policy.snapshot_pattern, now.astimezone(schedule_zone()), existing)
        expires = expires_at(now, policy.snapshot_expiry)
        engine.snapshot(ctid, name, marker(policy.pk, expires))
        row["snapshot"] = name
        log_line(f"CT {ctid}: snapshot '{name}' taken, expires {expires.isoformat() if expires else 'never'}")
        mine = owned(policy.pk, engine.list_snapshots(ctid))
        for old, reason in to_remove(ctid, mine, now, PruneOptions(**policy.snapshot_keep()), schedule_zone()):
            engine.delete_snapshot(ctid, old)
            row["removed"].append(old)
            log_line(f"CT {ctid}: snapshot '{old}' deleted ({reason})")
        row["message"] = f"snapshot '{name}'" + (f", deleted {', '.join(row['removed'])}" if row["removed"] else "")
    except EngineError as exc:
        row.update(status="error", message=str(exc))
        log_line(f"CT {ctid}: ERROR: {exc}")
    return row


class Run(JobTask):
    """A ``snapshotjob``: ``target`` is the policy's ID; ``params``: ``slot`` (when it was due; None: run now)."""

    name = "caisson.protection.run"

    def perform(self, ctx: JobContext) -> str:
        policy = ProtectionPolicy.objects.filter(pk=int(ctx.job.target)).first()
        if policy is None:
            raise EngineError(f"protection policy {ctx.job.target} no longer exists")
        node = this_node()
        here = set(node_engine().ids())
        ctids = sorted(c.ctid for c in policy.containers(node) if c.ctid in here)
        ctx.log(
            f"policy {policy.name} on {node.name}: snapshots of {', '.join(map(str, ctids)) or 'no containers'}; "
            f"pattern {policy.snapshot_pattern}, expiry {policy.snapshot_expiry or 'never'}, "
            f"retention {policy.snapshot_keep() or 'keep all'}"
        )
        now, results = timezone.now(), []
        for number, ctid in enumerate(ctids):
            ctx.check_cancel()
            ctx.progress(number, len(ctids), f"CT {ctid} ({number + 1} of {len(ctids)})", force=True)
            results.append(protect(policy, ctid, now, ctx.log))
            sync_container(node, ctid)
        ctx.progress(len(ctids), len(ctids), "done", force=True)
        failed = [r for r in results if r["status"] == "error"]
        taken = sum(1 for r in results if r["status"] == "ok")
        summary = f"{taken} snapshots taken" + (f", {len(failed)} failed" if failed else "")
        title = f"snapshot policy {policy.name} on {node.name}: " + ("failed" if failed else "successful")
        body = "\n".join(
            [f"Policy {policy.name} on {node.name}, task {ctx.job.upid}: {summary}", ""]
            + [f"CT {r['ctid']}: {r['status'].upper()}: {r['message']}" for r in results]
        )
        notify(policy, "snapshot", node.name, bool(failed), title, body + "\n", results, ctx.log)
        if failed:
            raise EngineError(f"{summary}: {', '.join(str(r['ctid']) for r in failed)}")
        return summary


def scratch_id(taken: set[int]) -> int:
    """A free ID for the throwaway container, from the top of the range down (away from the IDs people use)."""
    from webui.models.inventory import CTID_MAX

    used = taken | set(Container.objects.filter(ctid__gt=CTID_MAX - 10_000).values_list("ctid", flat=True))
    return next(i for i in range(CTID_MAX, CTID_MAX - 10_000, -1) if i not in used)


class RestoreTestRun(JobTask):
    """A ``restoretest``: ``target`` is the policy's ID; ``params``: ``ctids`` (default: the policy's containers
    on this node).  The newest archive of each is restored as a throwaway, booted, checked and destroyed."""

    name = "caisson.protection.restore_test"

    def perform(self, ctx: JobContext) -> str:
        from engine.backup.restoretest import HealthCheck, restore_test
        from tasks.backups import archive_path
        from tasks.mirror import sync_backups

        policy = ProtectionPolicy.objects.filter(pk=int(ctx.job.target)).first()
        if policy is None:
            raise EngineError(f"protection policy {ctx.job.target} no longer exists")
        node, engine = this_node(), node_engine()
        sync_backups(node, force=True)
        wanted = ctx.params.get("ctids") or [c.ctid for c in policy.containers(node)]
        check = HealthCheck(**policy.health_check())
        results = []
        for number, ctid in enumerate(sorted(wanted)):
            ctx.check_cancel()
            ctx.progress(number, len(wanted), f"CT {ctid} ({number + 1} of {len(wanted)})", force=True)
            archive = BackupArchive.objects.filter(node=node, ctid=ctid).order_by("-time").first()
            if archive is None:
                ctx.log(f"CT {ctid}: no archive on {node.name} to test")
                results.append({"ctid": ctid, "status": "error", "message": "no archive to test"})
                continue
            scratch = scratch_id(set(engine.ids()))
            ctx.log(f"CT {ctid}: testing {archive.volid} as CT {scratch}")
            outcome = restore_test(
                engine, archive_path(archive.storage, archive.name), scratch, check, log=lambda t: ctx.log(f"  {t}")
            )
            RestoreTest.objects.create(
                node=node,
                ctid=ctid,
                storage=archive.storage,
                archive=archive.name,
                policy=policy,
                job=ctx.job,
                passed=outcome.passed,
                reason=outcome.reason,
                timings=outcome.timings,
                log="\n".join(outcome.log),
            )
            results.append(
                {
                    "ctid": ctid,
                    "status": "ok" if outcome.passed else "error",
                    "archive": archive.volid,
                    "message": "restorable" if outcome.passed else outcome.reason,
                    "timings": outcome.timings,
                }
            )
        ctx.progress(len(wanted), len(wanted), "done", force=True)
        failed = [r for r in results if r["status"] == "error"]
        summary = f"{len(results) - len(failed)} of {len(results)} archives restorable"
        title = f"restore test of policy {policy.name} on {node.name}: " + ("FAILED" if failed else "passed")
        body = "\n".join(
            [f"Policy {policy.name} on {node.name}, task {ctx.job.upid}: {summary}", ""]
            + [f"CT {r['ctid']}: {r.get('archive', '-')}: {r['message']}" for r in results]
        )
        notify(policy, "restore-test", node.name, bool(failed), title, body + "\n", results, ctx.log)
        if failed:
            raise EngineError(f"{summary}; failed: " + "; ".join(f"CT {r['ctid']}: {r['message']}" for r in failed))
        return summary


app.register_task(Run())
app.register_task(RestoreTestRun())
