"""Restart policies (``restart: always | on-failure``, a Caisson extension like Docker's): a container that
stopped by itself is started again by the node agent's tick.

"Stopped by itself" is told from the run record: ``stop``, ``shutdown`` and ``reboot`` remove it, so a record
whose process is gone means PID 1 ended on its own (an application exited, ``poweroff`` inside). How it
ended is known when the engine that reaps it is its parent (the node agent, a subreaper): ``note_exit``
keeps the wait status in ``<run>/<ID>.exit``; ``on-failure`` restarts on a non-zero exit or a signal, and
when the status is unknown (the process was reaped elsewhere).
"""

from __future__ import annotations

import contextlib
import os

from engine.errors import EngineError


def _exit_file(layout, ctid: int):
    return layout.run / f"{ctid}.exit"


def note_exit(layout, ctid: int, status: int) -> None:
    with contextlib.suppress(OSError):
        _exit_file(layout, ctid).write_text(str(status))


def exit_status(layout, ctid: int) -> int | None:
    """The last noted wait status of the container's PID 1 (``os.waitstatus_to_exitcode`` reads it)."""
    try:
        return int(_exit_file(layout, ctid).read_text())
    except (OSError, ValueError):
        return None


def due(node) -> list[int]:
    """The containers whose policy asks for a start now."""
    wanted = []
    for ctid in node.ids():
        try:
            config = node.config(ctid)
        except EngineError:
            continue
        policy = config.current.values.get("restart", "no")
        if policy == "no" or config.current.values.get("lock") or not node.layout.run_record(ctid).exists():
            continue
        if node.running(ctid) is not None:
            continue
        status = exit_status(node.layout, ctid)
        if policy == "on-failure" and status is not None and os.waitstatus_to_exitcode(status) == 0:
            continue
        wanted.append(ctid)
    return wanted


def forget_exit(layout, ctid: int) -> None:
    """At each start: the status of an earlier run says nothing about this one."""
    _exit_file(layout, ctid).unlink(missing_ok=True)
