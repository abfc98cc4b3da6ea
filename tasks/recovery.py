"""The node's recovery run by its agent: at start and on every tick, with what it did told in the jobs' logs.

The reconcile itself is the engine's (:mod:`engine.recovery`): locks of jobs
that no longer run released or finished, frozen containers thawed, half
starts cleaned up, temporary files swept.  Here it is run at the right
moments, and each action on a container is written into the log and the
result line of the failed job that left it (the newest ended job of that
container), so the person who started the job reads what became of it.
Jobs whose worker process died (a pool process killed, the agent killed)
are marked failed first: nothing runs them any more.
"""

from __future__ import annotations

import logging

from django.db.models import Max
from django.utils import timezone

from tasks.runtime import node_engine
from webui.live import publish, publish_job_lines
from webui.models import Job, JobLine

log = logging.getLogger(__name__)

ORPHANED = "the node agent stopped while this job ran; check the target's state before retrying"


def fail_dead_jobs(node, everything: bool) -> int:
    """Mark failed this node's running jobs whose worker is gone (``everything``: all of them, at the
    agent's start, when no job of this node can still run)."""
    from tasks.base import worker_alive

    count = 0
    for job in Job.objects.filter(node=node, status=Job.Status.RUNNING):
        if not everything and worker_alive(job.worker):
            continue
        job.status, job.ended, job.message = Job.Status.ERROR, timezone.now(), ORPHANED
        job.save(update_fields=["status", "ended", "message"])
        publish([job.path], {"type": "job", "job": job.summary()})
        count += 1
    return count


def recover_node(node, at_start: bool) -> list:
    """Run the engine's recovery (``full`` at the agent's start) and report it in the jobs it concerns."""
    from engine.recovery import recover

    fail_dead_jobs(node, everything=at_start)
    actions = recover(node_engine(), full=at_start)
    for action in actions:
        if action.ctid is not None:
            _tell_job(node, action)
    return actions


def _tell_job(node, action) -> None:
    job = (
        Job.objects.filter(node=node, target=str(action.ctid), status=Job.Status.ERROR)
        .order_by("-created", "-id")
        .first()
    )
    if job is None:
        return
    seq = (job.lines.aggregate(top=Max("seq"))["top"] or 0) + 1
    line = JobLine.objects.create(job=job, seq=seq, text=f"recovery: {action.detail}")
    publish_job_lines(job.pk, [{"seq": line.seq, "time": line.time.isoformat(), "text": line.text}])
    job.message = f"{job.message}; recovered: {action.detail}" if job.message else f"recovered: {action.detail}"
    job.save(update_fields=["message"])
    publish([job.path], {"type": "job", "job": job.summary()})
