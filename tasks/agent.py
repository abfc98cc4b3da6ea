"""``python -m tasks.agent``: this node's agent, a Celery worker on the node's own queue.

It runs privileged (the engine needs root), registers the node, mirrors its
containers and templates into the database, schedules its own heartbeat and
metrics tick in Celery beat's table, queues the node's ``startall`` when it is
the first agent start since the host booted (``tasks.boot``), starts the node's
CLI service (``engine.cli.service``: ``python -m engine`` then runs in a warm
process) and the node's tick worker, then consumes ``node.<name>``.
The tick (heartbeat, metrics, mirror) has a queue of its own, ``node.<name>.tick``,
served by a one-slot worker child (``--tick-worker``): with every job slot on a
long job the node still beats and does not show offline.
Containers do not depend on it: stopping the agent leaves them running.

A worker that stops without being asked (Celery gives up with an
"unrecoverable error" when Redis restarts under it and its reconnect finds
the port closed for a moment) is not left dead: the agent execs itself
again, the same process (still the containers' subreaper), whose start runs
recovery like any agent start.
"""

from __future__ import annotations

import argparse
import os
import sys


def prepare_node() -> str:
    """Register this node, its periodic tick and its current state; return its queue."""
    import django

    django.setup()
    from tasks.boot import queue_boot_startall
    from tasks.firewall import sync_firewall
    from tasks.mirror import sync_all, sync_storages, sync_templates
    from tasks.node import ensure_lxcfs, heartbeat, tune_cgroups
    from tasks.recovery import recover_node
    from tasks.runtime import this_node

    node = this_node()
    heartbeat(node)
    ensure_lxcfs()
    tune_cgroups()
    recover_node(node, at_start=True)  # jobs the dead agent ran failed, what they left recovered
    schedule_tick(node)
    sync_all(node)
    sync_templates(node)
    sync_storages(node)
    sync_firewall(node)
    queue_boot_startall(node)  # the first start since the host booted brings up the onboot containers
    return node.queue


def schedule_tick(node) -> None:
    """The node's tick in beat's table, every ``CAISSON_SAMPLE_INTERVAL`` seconds on its tick queue."""
    from django.conf import settings
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    seconds = max(1, int(settings.CAISSON_SAMPLE_INTERVAL))
    every, _ = IntervalSchedule.objects.get_or_create(every=seconds, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.update_or_create(
        name=f"tick {node.name}",
        defaults={
            "task": "caisson.node.tick",
            "interval": every,
            "queue": node.tick_queue,  # the tick worker's, not the job slots'
            "enabled": True,
            "expire_seconds": seconds,
            "description": "heartbeat, metrics and mirror of this node",
        },
    )


def start_cli_service():
    """The node's CLI service (``engine.cli.service``), so ``python -m engine`` runs in a warm process.

    It is a child of this agent that exits with it; its socket is ``$CAISSON_RUN/cli.sock``."""
    import subprocess

    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli.service", "--with-parent"], stdin=subprocess.DEVNULL, close_fds=True
    )


def start_tick_worker(loglevel: str):
    """The node's tick worker: this program again with ``--tick-worker``, a child that exits with the agent.

    It is started as the same module (``__main__``'s), so a wrapper of the agent (``bench/sql_counting_agent``)
    wraps it too."""
    import subprocess
    from pathlib import Path

    module = getattr(sys.modules["__main__"].__spec__, "name", None) or "tasks.agent"
    repo = str(Path(__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{path}" if path else repo}
    return subprocess.Popen(
        [sys.executable, "-m", module, "--tick-worker", "--loglevel", loglevel],
        stdin=subprocess.DEVNULL,
        close_fds=True,
        env=env,
    )


def tick_worker(loglevel: str) -> int:
    """Serve the node's tick queue, one tick at a time in this process (Celery's solo pool)."""
    import ctypes
    import signal

    import django

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: go with the agent
    if os.getppid() == 1:  # the agent died before the request took effect
        return 0
    django.setup()
    from django.conf import settings

    from tasks.celery import app
    from webui.models.inventory import tick_queue

    queue = tick_queue(settings.CAISSON_NODE)
    app.worker_main(
        ["worker", "-Q", queue, "-n", f"tick@{queue}", "-P", "solo", "--loglevel", loglevel]
        + ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.agent", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--concurrency",
        type=int,
        default=max(2, os.cpu_count() or 1),
        help="jobs run side by side (default: %(default)s)",
    )
    parser.add_argument("--loglevel", default="INFO")
    parser.add_argument("--tick-worker", action="store_true", help="serve the node's tick queue (the agent's child)")
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency: at least 1")
    if os.geteuid() != 0:
        print("error: the node agent runs containers and needs root", file=sys.stderr)
        return 1
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webui.settings")
    if args.tick_worker:
        return tick_worker(args.loglevel)
    queue = prepare_node()
    from engine import reaper, syscalls
    from engine.state import DEFAULT_RUN
    from tasks.celery import app

    syscalls.prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: inits orphaned by a recycled worker process come here
    reaper.start(DEFAULT_RUN)  # and are reaped as they exit
    service = start_cli_service()
    ticker = start_tick_worker(args.loglevel)
    from celery.signals import worker_shutting_down

    asked = []  # SIGTERM, SIGINT, SIGQUIT: a stop someone wanted
    worker_shutting_down.connect(lambda **_: asked.append(True), weak=False)
    try:
        _work(app, queue, args)
    finally:
        if not asked:
            for child in (service, ticker):  # the new start makes its own (an exec is no exit: they would stay)
                child.terminate()
                child.wait(10)
            _again(argv)
    return 0


def _again(argv: list[str] | None) -> None:
    """The worker stopped on its own: start the agent again in this process (its pid, its children)."""
    import time

    print("agent: the worker stopped without being asked (broker lost?); starting again", file=sys.stderr)
    sys.stderr.flush()
    sys.stdout.flush()
    time.sleep(2.0)  # a broker still restarting: not a tight loop
    os.execv(sys.executable, [sys.executable, "-m", "tasks.agent", *(sys.argv[1:] if argv is None else argv)])


def _work(app, queue: str, args) -> None:
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


if __name__ == "__main__":
    sys.exit(main())
