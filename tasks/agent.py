"""``python -m tasks.agent``: this node's agent, a Celery worker on the node's own queue.

It runs privileged (the engine needs root), registers the node, mirrors its
containers and templates into the database, schedules its own heartbeat and
metrics tick in Celery beat's table, queues the node's ``startall`` when it is
the first agent start since the host booted (``tasks.boot``), then consumes
``node.<name>``.
Containers do not depend on it: stopping the agent leaves them running.
"""

from __future__ import annotations

import argparse
import os
import sys


def fail_orphaned_jobs(node) -> int:
    """Jobs this node was running when its agent died: one agent per node, so none of them still runs."""
    from django.utils import timezone

    from webui.live import publish
    from webui.models import Job

    orphans = list(Job.objects.filter(node=node, status=Job.Status.RUNNING))
    for job in orphans:
        job.status, job.ended = Job.Status.ERROR, timezone.now()
        job.message = "the node agent stopped while this job ran; check the target's state before retrying"
        job.save(update_fields=["status", "ended", "message"])
        publish([job.path], {"type": "job", "job": job.summary()})
    return len(orphans)


def prepare_node() -> str:
    """Register this node, its periodic tick and its current state; return its queue."""
    import django

    django.setup()
    from django.conf import settings
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from tasks.boot import queue_boot_startall
    from tasks.firewall import sync_firewall
    from tasks.mirror import sync_all, sync_storages, sync_templates
    from tasks.node import heartbeat
    from tasks.runtime import this_node

    node = this_node()
    heartbeat(node)
    fail_orphaned_jobs(node)
    seconds = max(1, int(settings.CAISSON_SAMPLE_INTERVAL))
    every, _ = IntervalSchedule.objects.get_or_create(every=seconds, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.update_or_create(
        name=f"tick {node.name}",
        defaults={
            "task": "caisson.node.tick",
            "interval": every,
            "queue": node.queue,
            "enabled": True,
            "expire_seconds": seconds,
            "description": "heartbeat, metrics and mirror of this node",
        },
    )
    sync_all(node)
    sync_templates(node)
    sync_storages(node)
    sync_firewall(node)
    queue_boot_startall(node)  # the first start since the host booted brings up the onboot containers
    return node.queue


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.agent", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--concurrency",
        type=int,
        default=max(2, os.cpu_count() or 1),
        help="jobs run side by side (default: %(default)s)",
    )
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency: at least 1")
    if os.geteuid() != 0:
        print("error: the node agent runs containers and needs root", file=sys.stderr)
        return 1
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webui.settings")
    queue = prepare_node()
    from engine import syscalls
    from tasks.celery import app

    syscalls.prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: inits orphaned by a recycled worker process are reaped here
    app.worker_main(
        [
            "worker",
            "-Q",
            queue,
            "-n",
            f"agent@{queue}",
            "-c",
            str(args.concurrency),
            "--loglevel",
            args.loglevel,
            "--without-gossip",
            "--without-mingle",
            "-E",
        ]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
