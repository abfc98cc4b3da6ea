"""Backup job runs (Proxmox's Datacenter -> Backup): beat's check, one run per node, retention and the mail.

Beat sends ``caisson.backup.check`` for each enabled ``BackupSchedule``
every ``CAISSON_BACKUP_CHECK_INTERVAL`` seconds.  The check claims a run in
one transaction: it locks the schedule row, and only if ``next_due`` has
passed it records that time as ``last_slot``, moves ``next_due`` to the
event's next time after *now* (not after the slot: a clock that jumped
forward over several runs gives one run, not a burst), and queues one
``vzdumpjob`` per node the job covers.  A second beat, or a check delivered
twice, finds ``next_due`` in the future and claims nothing; a clock that
jumped back finds it in the future too, so a time already run is not run
again.  If the process dies before the commit nothing was claimed, and the
next check claims the run.

A ``vzdumpjob`` runs on its node and backs the selected containers up one
after the other, as vzdump does, each as a ``vzdump`` job of its own (its
log, progress and task-history row), run in the same worker process.  Each
backup prunes that container's archives with the job's retention only once
it has succeeded; protected archives are never pruned.  At the end, one mail
per run (always, or on failure only) lists each container's result, size,
duration and pruned archives.
"""

from __future__ import annotations

import logging
import socket
from datetime import datetime

from django.conf import settings
from django.core.mail import send_mail
from django.db import close_old_connections, transaction
from django.utils import timezone

from engine.errors import EngineError
from tasks.backups import BackupJob
from tasks.base import JobContext
from tasks.celery import app
from tasks.runtime import node_engine, this_node
from webui.live import publish
from webui.models import BackupSchedule, Container, Job, Node

log = logging.getLogger(__name__)


# ---- beat's check ----------------------------------------------------------------------------
@app.task(name="caisson.backup.check", ignore_result=True)
def check(schedule: int) -> None:
    close_old_connections()
    claim_run(schedule)


def claim_run(schedule_id: int, now: datetime | None = None) -> list[Job] | None:
    """Claim the schedule's due run and queue it on its nodes; None when nothing is due (or it is claimed)."""
    return claim_slot(BackupSchedule, schedule_id, "schedule", now)


def claim_slot(
    model,
    pk: int,
    event_field: str,
    now: datetime | None = None,
    due_field: str = "next_due",
    slot_field: str = "last_slot",
    **dispatch,
) -> list[Job] | None:
    """Claim the due run of a scheduled row (a backup job, a policy's snapshots or restore tests) and
    ``dispatch`` it.

    ``model`` has ``enabled``, ``due_field``, ``slot_field``, the calendar event in ``event_field``,
    ``sync_periodic_task`` or ``rearm`` and ``dispatch(slot=, **dispatch)``; None when nothing is due or it is
    claimed."""
    from webui.models.backups import parse_event, schedule_zone

    with transaction.atomic():
        row = model.objects.select_for_update().filter(pk=pk).first()
        if row is None or not row.enabled or getattr(row, due_field) is None:
            return None
        now = now or timezone.now()
        slot = getattr(row, due_field)
        if now < slot:
            return None
        setattr(row, slot_field, slot)
        setattr(row, due_field, parse_event(getattr(row, event_field)).next_after(max(now, slot), schedule_zone()))
        row.save(update_fields=[slot_field, due_field])
        if getattr(row, due_field) is None:
            row.rearm(after=max(now, slot))  # the event has no more times: beat stops checking
        log.info("%s: %s run due at %s claimed; next at %s", row, event_field, slot, getattr(row, due_field))
        return row.dispatch(slot=slot, **dispatch)


# ---- one run on one node ---------------------------------------------------------------------
def selected(
    schedule: BackupSchedule, node: Node, report_missing: bool, expected: list[int] | None = None
) -> tuple[list[int], list[int]]:
    """This node's containers the job selects, by the node's own list; and listed IDs found nowhere."""
    here, expected = set(node_engine().ids()), set(expected or [])
    mode = schedule.selection
    if mode == BackupSchedule.Selection.ALL:
        chosen = here
    elif mode == BackupSchedule.Selection.EXCLUDE:
        chosen = here - set(schedule.ctids)
    elif mode == BackupSchedule.Selection.TAG:
        chosen = here & {c.ctid for c in schedule.tagged(node)}
    elif mode == BackupSchedule.Selection.POOL:
        chosen = here & set(
            Container.objects.filter(pool_id=schedule.pool_id, node=node).values_list("ctid", flat=True)
        )
    else:
        chosen = here & set(schedule.ctids)
    missing = []
    if mode == BackupSchedule.Selection.INCLUDE:
        # Listed but not here: an error if the run was sent here for it, if the mirror puts it on this node,
        # or if it exists nowhere (one node reports those).
        where = dict(Container.objects.filter(ctid__in=schedule.ctids).values_list("ctid", "node_id"))
        missing = [
            c
            for c in schedule.ctids
            if c not in here and (c in expected or where.get(c) == node.pk or (c not in where and report_missing))
        ]
    return sorted(chosen), missing


class Run(BackupJob):
    """A ``vzdumpjob``: ``target`` is the schedule's ID; ``params``: ``slot`` (when it was due), ``report_missing``."""

    name = "caisson.backup.run"

    def after(self, ctx: JobContext) -> None:
        """Each backup mirrored its own container and archives."""

    def perform(self, ctx: JobContext) -> str:
        schedule = BackupSchedule.objects.filter(pk=int(ctx.job.target)).first()
        if schedule is None:
            raise EngineError(f"backup job {ctx.job.target} no longer exists")
        node = this_node()
        ctids, missing = selected(schedule, node, bool(ctx.params.get("report_missing")), ctx.params.get("expected"))
        ctx.log(
            f"backup job {schedule.pk} ({schedule.schedule}) on {node.name}: "
            f"{', '.join(map(str, ctids)) or 'no containers'}; storage {schedule.storage}, mode {schedule.mode}, "
            f"compress {schedule.compress}; retention {schedule.prune_options() or 'keep all'}"
        )
        results = [
            {
                "ctid": ctid,
                "status": "error",
                "message": f"CT {ctid} does not exist",
                "hostname": "",
                "size": None,
                "seconds": None,
                "archive": "",
                "pruned": [],
            }
            for ctid in missing
        ]
        for ctid in missing:
            ctx.log(f"CT {ctid}: ERROR: it does not exist on any node")
        vzdump = app.tasks["caisson.backup.vzdump"]
        for number, ctid in enumerate(ctids):
            ctx.check_cancel()
            ctx.progress(number, len(ctids), f"CT {ctid} ({number + 1} of {len(ctids)})", force=True)
            child = self.child(ctx, schedule, node, ctid)
            vzdump.run(child.pk)  # here, in this process: one backup after the other on a node
            child.refresh_from_db()
            results.append(summary_row(child))
            ctx.log(f"CT {ctid}: {child.status.upper()}: {child.message} (job {child.pk})")
            for pruned in results[-1]["pruned"]:
                ctx.log(f"CT {ctid}: pruned {pruned}")
        ctx.progress(len(ctids), len(ctids), "done", force=True)
        failed = [r for r in results if r["status"] != "ok"]
        if schedule.mail_list and (failed or schedule.mail_when == BackupSchedule.MailWhen.ALWAYS):
            self.mail(ctx, schedule, node, results)
        policy = getattr(schedule, "policy", None)
        if policy is not None:
            from tasks.notify import notify

            subject, body = mail_text(schedule, node, results, ctx.job)
            notify(policy, "backup", node.name, bool(failed), subject, body, results, ctx.log)
            proven = [r["ctid"] for r in results if r["status"] == "ok"]
            if policy.restore_test and proven:
                self.queue_restore_test(ctx, policy, node, proven)
        if failed:
            raise EngineError(
                f"{len(failed)} of {len(results)} backups failed: {', '.join(str(r['ctid']) for r in failed)}"
            )
        return f"{len(results)} backups OK"

    def queue_restore_test(self, ctx: JobContext, policy, node: Node, ctids: list[int]) -> None:
        """The policy asks for its new archives to be proven: a ``restoretest`` job on this node, after this run."""
        from webui.models.queue import JobRefused, submit

        try:
            job = submit("restoretest", node, "/", str(policy.pk), user=ctx.job.user, params={"ctids": ctids})
            ctx.log(f"restore test queued (job {job.pk})")
        except JobRefused as exc:
            ctx.log(f"restore test not queued: {exc}")

    def child(self, ctx: JobContext, schedule: BackupSchedule, node: Node, ctid: int) -> Job:
        params = {
            "storage": schedule.storage,
            "mode": schedule.mode,
            "compress": schedule.compress,
            "notes": schedule.notes,
            "prune": schedule.prune_options(),
            "parent": ctx.job.pk,
            "schedule": schedule.pk,
        }
        with transaction.atomic():
            job = Job.objects.create(
                node=node, kind="vzdump", path=f"/ct/{ctid}", target=str(ctid), params=params, user=ctx.job.user
            )
            publish([job.path], {"type": "job", "job": job.summary()})
        return job

    def mail(self, ctx: JobContext, schedule: BackupSchedule, node: Node, results: list[dict]) -> None:
        subject, body = mail_text(schedule, node, results, ctx.job)
        try:
            send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, schedule.mail_list, fail_silently=False)
            ctx.log(f"mail sent to {', '.join(schedule.mail_list)}")
        except Exception as exc:  # noqa: BLE001 - the backups are done; a mail server's fault is only logged
            ctx.log(f"mail to {', '.join(schedule.mail_list)} failed: {exc}")


def summary_row(child: Job) -> dict:
    result = child.params.get("result") or {}
    seconds = (child.ended - child.started).total_seconds() if child.ended and child.started else None
    hostname = Container.objects.filter(ctid=int(child.target)).values_list("hostname", flat=True).first() or ""
    return {
        "ctid": int(child.target),
        "status": child.status,
        "message": child.message,
        "hostname": hostname,
        "size": result.get("size"),
        "seconds": seconds,
        "archive": result.get("archive", ""),
        "pruned": result.get("pruned", []),
        "job": child.pk,
    }


def mail_text(schedule: BackupSchedule, node: Node, results: list[dict], job: Job) -> tuple[str, str]:
    """vzdump's status mail: a table of the containers, then what was pruned, then the failures' messages."""
    from engine.units import human_bytes

    failed = [r for r in results if r["status"] != "ok"]
    subject = (
        f"vzdump backup status ({node.name}): backup "
        f"{'failed' if failed else 'successful'}{f' ({len(failed)} of {len(results)})' if failed else ''}"
    )
    lines = [
        f"Backup job {schedule.pk} on {node.name} ({socket.gethostname()}), schedule '{schedule.schedule}', "
        f"storage {schedule.storage}" + (f" - {schedule.comment}" if schedule.comment else ""),
        f"Task {job.upid}",
        "",
        f"{'VMID':<10} {'NAME':<20} {'STATUS':<8} {'TIME':>8} {'SIZE':>10}  FILENAME",
    ]
    for r in results:
        took = f"{r['seconds']:.0f}s" if r["seconds"] is not None else "-"
        lines.append(
            f"{r['ctid']:<10} {r['hostname'][:20]:<20} {r['status'].upper():<8} {took:>8} "
            f"{human_bytes(r['size']):>10}  {r['archive'] or '-'}"
        )
    total = sum(r["size"] or 0 for r in results)
    lines += ["", f"TOTAL: {len(results)} backups, {len(failed)} failed, {human_bytes(total)}"]
    pruned = [(r["ctid"], name) for r in results for name in r["pruned"]]
    if pruned:
        lines += [
            "",
            "Pruned (retention "
            + ", ".join(f"{k.replace('_', '-')}={v}" for k, v in schedule.prune_options().items())
            + "):",
        ]
        lines += [f"  CT {ctid}: {name}" for ctid, name in pruned]
    if failed:
        lines += ["", "Failures:"]
        lines += [f"  CT {r['ctid']}: {r['message']}" for r in failed]
    return subject, "\n".join(lines) + "\n"


app.register_task(Run())
