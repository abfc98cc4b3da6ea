"""What a console session reads besides its pty, and its terminal's processes.

``LogFollower`` is the console mode's read-only view of the container's console log (when the held
/dev/console is not there): the tail shown first, the log followed as it grows, a trimmed log
found again where the shown output ends. ``session_members`` and ``children`` find the terminal's
processes, to kill them all when the session ends. ``tasks.console_relay.relay.Session`` takes
both; it provides ``relay``, ``ctid``, ``sid``, ``fd`` and ``log_seen``.
"""

from __future__ import annotations

import asyncio
import logging
import os

from engine import consolelog
from tasks.console_protocol import CHUNK

log = logging.getLogger("caisson.console")
CONSOLE_TAIL = 64 * 1024  # console mode starts this far from the end of the log


def session_members(leader: int) -> list[int]:
    """Host pids of every process in the terminal's session (the session id is the leader's pid)."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == leader:  # field 6 of stat: the session id
            members.append(int(entry.name))
    return members


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


class LogFollower:
    """The console log of a session's container, followed read-only."""

    def _log_tail(self) -> bytes:
        try:
            fd = os.open(self.relay.engine.layout.console_log(self.ctid), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return b""
        try:
            size = os.fstat(fd).st_size
            data = os.pread(fd, CONSOLE_TAIL, max(0, size - CONSOLE_TAIL))
        finally:
            os.close(fd)
        return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")

    async def _read_log(self) -> bytes:
        while True:
            data = os.read(self.fd, CHUNK)
            if data:
                self.log_seen = (self.log_seen + data)[-consolelog.OVERLAP :]
                # A file, not a terminal: no line discipline turned its newlines into CR LF.
                return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            stat = os.fstat(self.fd)
            if stat.st_nlink == 0 and not self._reopen_log():
                return b""  # the container was destroyed
            if stat.st_size < os.lseek(self.fd, 0, os.SEEK_CUR):
                os.lseek(self.fd, 0, os.SEEK_SET)  # the log was started afresh
            try:  # what the container wrote since: into the log (its console is a capped memfd)
                await asyncio.to_thread(self.relay.engine.drain_console, self.ctid)
            except Exception as exc:  # noqa: BLE001 - the log read so far stays shown
                log.warning("console session %s: draining the console failed: %s", self.sid, exc)
            await asyncio.sleep(0.2)

    def _reopen_log(self) -> bool:
        """A drain trimmed the log by replacing it: go on in the new file where the output we showed ends."""
        try:
            fd = os.open(self.relay.engine.layout.console_log(self.ctid), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        content = os.pread(fd, os.fstat(fd).st_size, 0)
        os.lseek(fd, consolelog.resume_offset(content, self.log_seen), os.SEEK_SET)
        os.close(self.fd)
        self.fd = fd
        return True
