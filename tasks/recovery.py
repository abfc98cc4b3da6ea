"""The node's recovery run by its agent: at start and on every tick, with what it did told in the jobs' logs.

The reconcile itself is the engine's (:mod:`engine.recovery`): locks of jobs
that no longer run released or finished, frozen containers thawed, half
starts cleaned up, temporary files swept.  Here it is run at the right
moments, and each action on a container is written into the log and the
result line of the failed job that left it (the newest ended job of that
container), so the person who started the job reads what became of it.
Jobs whose worker process died (a pool process killed, the agent killed)
are marked failed first: nothing runs them any more.  Jobs still queued whose
message the broker no longer holds (Redis restarted without its data, a
process killed between the commit of the row and the send) are sent again:
a job runs once however many messages name it, since running claims its row
(``queued → running``).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import timedelta

from django.db.models import Max
from django.utils import timezone

from tasks.runtime import node_engine
from webui.live import publish, publish_job_lines
from webui.models import Job, JobLine

log = logging.getLogger(__name__)

ORPHANED = "the node agent stopped while this job ran; check the target's state before retrying"
REQUEUE_AFTER = timedelta(seconds=60)  # a queued job this old whose message is gone is sent again
PRIORITY_SEP = "\x06\x16"  # kombu's Redis transport keeps priority levels in lists named <queue><sep><n>


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
    requeue_lost_jobs(node)
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


def requeue_lost_jobs(node) -> int:
    """Send again the node's queued jobs (older than :data:`REQUEUE_AFTER`) that no message in the broker
    names; how many were sent."""
    from tasks.celery import app
    from webui.models.queue import TASKS

    stale = list(Job.objects.filter(node=node, status=Job.Status.QUEUED, created__lt=timezone.now() - REQUEUE_AFTER))
    if not stale:
        return 0
    held = _jobs_in_broker(app, node.queue)
    if held is None:
        return 0  # the broker could not be read completely: sending again now might be wrong, wait
    sent = 0
    for job in stale:
        if job.pk in held or job.kind not in TASKS:
            continue
        log.warning("job %s (%s) was queued but no message names it any more; sending it again", job.pk, job.kind)
        app.send_task(TASKS[job.kind], args=[job.pk], queue=node.queue)
        sent += 1
    return sent


def _jobs_in_broker(app, queue: str) -> set[int] | None:
    """Job IDs named by messages waiting in ``queue`` or delivered and not yet acknowledged (kombu's Redis
    transport: the queue's lists and the ``unacked`` hash); None if a message could not be read."""
    held: set[int] = set()
    with app.connection_for_read() as conn:
        client = conn.default_channel.client
        raws = []
        for key in client.scan_iter(match=f"{queue}*"):
            name = key.decode() if isinstance(key, bytes) else key
            if name == queue or name.startswith(queue + PRIORITY_SEP):
                raws += client.lrange(name, 0, -1)
        for value in client.hvals("unacked"):
            try:
                raws.append(json.dumps(json.loads(value)[0]))
            except (ValueError, TypeError, IndexError):
                return None
    for raw in raws:
        try:
            headers = json.loads(raw).get("headers") or {}
        except (ValueError, AttributeError):
            return None
        args = headers.get("argsrepr")
        if not isinstance(args, str):
            return None
        held |= {int(n) for n in re.findall(r"\d+", args)}
    return held
