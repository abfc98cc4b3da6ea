"""Restart policies (``restart: always | on-failure``, a Caisson extension like Docker's): a container that
stopped by itself is started again by the node agent's tick.

"Stopped by itself" is told from the run record: ``stop``, ``shutdown`` and ``reboot`` remove it, so a record
whose process is gone means PID 1 ended on its own (an application exited, ``poweroff`` inside). How it
ended is known when the engine that reaps it is its parent (the node agent, a subreaper): the reaper
(``engine.reaper.note_exit``) keeps the wait status in ``<run>/<ID>.exit``; ``on-failure`` restarts on a
non-zero exit or a signal, and when the status is unknown (the process was reaped elsewhere).

Whatever the policy, a container whose init asked for a restart is started again, as LXC and ``pct`` do:
``reboot`` inside ends the container's pid namespace, whose init the kernel kills with SIGHUP (SIGINT for a
power-off or halt, which leaves the container stopped).  Only reboot(2) ends an init so: a signal sent from
outside its pid namespace that init has no handler for is dropped.

A container that keeps failing is restarted less and less often: after the n-th restart in a row it
waits ``min(BACKOFF * 2**n, MAX_WAIT)`` seconds (kept in ``<run>/<ID>.restarts``); a run that lasted
``STEADY`` seconds or more starts the count afresh.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time

from engine import reaper
from engine.errors import EngineError
from engine.state import RunRecord

BACKOFF = 5.0
MAX_WAIT = 300.0
STEADY = 600.0


def _exit_file(layout, ctid: int):
    return reaper.exit_file(layout.run, ctid)


def _count_file(layout, ctid: int):
    return layout.run / f"{ctid}.restarts"


def files(layout, ctid: int) -> tuple:
    """What this module keeps for a container (removed with it)."""
    return _exit_file(layout, ctid), _count_file(layout, ctid)


def exit_status(layout, ctid: int) -> int | None:
    """The last noted wait status of the container's PID 1 (``os.waitstatus_to_exitcode`` reads it)."""
    try:
        return int(_exit_file(layout, ctid).read_text())
    except (OSError, ValueError):
        return None


def rebooted(status: int | None) -> bool:
    """Whether a wait status of PID 1 is the kernel's for a reboot(2) restart inside its pid namespace."""
    return status is not None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGHUP


REASON_REBOOT = "reboot inside"
REASON_POLICY = "restart policy"


def due(node, now: float | None = None) -> dict[int, str]:
    """The containers to start now, each with why (its init rebooted, or its policy asks for it); each one
    returned is counted as restarted."""
    now = time.time() if now is None else now
    wanted = {}
    for ctid in node.ids():
        try:
            config = node.config(ctid)
        except EngineError:
            continue
        policy = config.current.values.get("restart", "no")
        if not node.layout.run_record(ctid).exists():  # never started, or stopped on purpose: count afresh
            _count_file(node.layout, ctid).unlink(missing_ok=True)
            continue
        status = exit_status(node.layout, ctid)
        reboot = rebooted(status)
        if (policy == "no" and not reboot) or config.current.values.get("lock"):
            continue
        if node.running(ctid) is not None:
            continue
        if policy == "on-failure" and not reboot and status is not None and os.waitstatus_to_exitcode(status) == 0:
            continue
        if _backing_off(node.layout, ctid, now):
            continue
        wanted[ctid] = REASON_REBOOT if reboot else REASON_POLICY
    return wanted


def _backing_off(layout, ctid: int, now: float) -> bool:
    """True while the container waits before its next restart; else the restart is counted."""
    path = _count_file(layout, ctid)
    try:
        data = json.loads(path.read_text())
        count, last = int(data["count"]), float(data["last"])
    except (OSError, ValueError, KeyError, TypeError):
        count, last = 0, 0.0
    record = RunRecord.load(layout.run_record(ctid))
    if record is not None and now - record.started_at >= STEADY:  # the last run lasted: count afresh
        count = 0
    if count and now - last < min(BACKOFF * 2 ** (count - 1), MAX_WAIT):
        return True
    with contextlib.suppress(OSError):
        path.write_text(json.dumps({"count": count + 1, "last": now}))
    return False


def forget_exit(layout, ctid: int) -> None:
    """At each start: the status of an earlier run says nothing about this one."""
    _exit_file(layout, ctid).unlink(missing_ok=True)
