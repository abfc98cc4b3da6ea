"""Reaping container inits in a long-lived engine process that is their child subreaper.

A container's init is re-parented, once the start's setup child exits, to the
nearest child subreaper (``Engine(reaper=True)``, as the node agent's
processes are), else to the host's PID 1, which in a container host without
an init system may never reap.  When init exits (a poweroff inside, a kill),
it stays a zombie until its parent waits for it.

:class:`InitReaper` is a thread that waits for exactly those processes: it
reads the run records (``run/<ID>.json``: init's pid and start time), opens a
pidfd for each init that is this process's child, and reaps it through that
pidfd (``waitid(P_PIDFD)``) as soon as it becomes readable, i.e. at its exit.
It never waits for any other child (``waitpid(-1)`` would steal the exit
status of the engine's own helpers and of Celery's pool processes), and a
pidfd names one process, so a recycled pid is never reaped by mistake.
:func:`reap_init`, which the engine's stop calls, goes the same way, so the
thread and the engine may race for an init harmlessly: one of them gets it,
the other ``ECHILD``.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from pathlib import Path

from engine import procfs


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    return int(fields[1]) if len(fields) > 1 else None


def open_init(pid: int, starttime: int) -> int | None:
    """A pidfd for ``pid`` if it is still the init that started at ``starttime`` and our child, else None."""
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return None
    stat = procfs.proc_stat(pid)  # read after the pidfd is held: the pid cannot be recycled meanwhile
    if stat is None or stat.starttime != starttime or _ppid(pid) != os.getpid():
        os.close(fd)
        return None
    return fd


GONE = -1  # reaped elsewhere: how it ended is not known here


def _wait(fd: int) -> int | None:
    """Reap the process of a pidfd if it has exited: its wait status (as ``os.waitpid`` gives it), ``GONE``
    if someone else reaped it, None while it runs."""
    try:
        result = os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        return GONE
    if result is None:
        return None
    if result.si_code == os.CLD_EXITED:
        return (result.si_status & 0xFF) << 8
    return result.si_status | (0x80 if result.si_code == os.CLD_DUMPED else 0)


def exit_file(run_dir: Path, ctid: int | str) -> Path:
    """Where the wait status of a container's last init is kept (restart policies read it)."""
    return Path(run_dir) / f"{ctid}.exit"


def note_exit(run_dir: Path, ctid: int | str, status: int | None) -> None:
    """Keep how a reaped init ended, when that is known."""
    if status is not None and status != GONE:
        with contextlib.suppress(OSError):
            exit_file(run_dir, ctid).write_text(str(status))


def reap_init(pid: int, starttime: int) -> int | None:
    """Reap the exited container init ``pid`` (started at ``starttime``) if it is our child: its wait status,
    or None (still running, not our child, or reaped elsewhere)."""
    fd = open_init(pid, starttime)
    if fd is None:
        return None
    try:
        status = _wait(fd)
    finally:
        os.close(fd)
    return None if status == GONE else status


class InitReaper(threading.Thread):
    """Reaps the container inits of one node's run directory that are this process's children."""

    def __init__(self, run_dir: Path, interval: float = 0.5, on_exit=None):
        super().__init__(name="caisson-init-reaper", daemon=True)
        self.run_dir, self.interval = Path(run_dir), interval
        # called with the container ID and pid of each init reaped here, in a thread of its own (a hookscript may
        # take minutes; reaping goes on meanwhile)
        self.on_exit = on_exit
        self.watched: dict[int, tuple[int, str]] = {}  # pid -> (pidfd, container ID)
        self._seen: dict[str, int] = {}  # run record name -> its mtime_ns when last read

    def scan(self) -> None:
        """Watch the inits of new or changed run records (a cheap stat per record otherwise)."""
        from engine.state import RunRecord

        try:
            entries = list(os.scandir(self.run_dir))
        except OSError:
            return
        names = set()
        for entry in entries:
            if not entry.name.endswith(".json"):
                continue
            names.add(entry.name)
            with contextlib.suppress(OSError):
                mtime = entry.stat().st_mtime_ns
                if self._seen.get(entry.name) == mtime:
                    continue
                self._seen[entry.name] = mtime
                record = RunRecord.load(Path(entry.path))
                if record is None or record.pid in self.watched:
                    continue
                fd = open_init(record.pid, record.starttime)
                if fd is not None:
                    self.watched[record.pid] = (fd, entry.name.removesuffix(".json"))
        for name in set(self._seen) - names:
            del self._seen[name]

    def reap_ready(self, timeout: float) -> None:
        if not self.watched:
            select.select([], [], [], timeout)
            return
        ready, _, _ = select.select([fd for fd, _ in self.watched.values()], [], [], timeout)
        for pid, (fd, ctid) in list(self.watched.items()):
            if fd in ready and (status := _wait(fd)) is not None:
                note_exit(self.run_dir, ctid, status)
                os.close(fd)
                del self.watched[pid]
                if self.on_exit is not None and ctid.isdigit():
                    threading.Thread(target=self.on_exit, args=(int(ctid), pid), name="caisson-init-exit").start()

    def run(self) -> None:
        rounds = 0
        while True:
            rounds += 1
            if rounds % 60 == 0:
                self._seen.clear()  # read every record again now and then: inits of an exited sibling come here
            try:
                self.scan()
                self.reap_ready(self.interval)
            except Exception:  # noqa: BLE001 - the thread must outlive one odd record
                select.select([], [], [], self.interval)


_started: dict[str, InitReaper] = {}
_lock = threading.Lock()


def start(run_dir: Path, on_exit=None) -> InitReaper:
    """The reaper thread of this process for ``run_dir``, started once (again in a forked child)."""
    key = f"{os.getpid()}:{Path(run_dir)}"
    with _lock:
        reaper = _started.get(key)
        if reaper is None:
            reaper = _started[key] = InitReaper(run_dir, on_exit=on_exit)
            reaper.start()
        return reaper
