"""A container's console log, capped: a container printing forever cannot fill the host.

There is no process of ours per container, and the container must never block on its output.
So init's stdout and stderr are a memfd of the cap's size, sealed against growth
(``F_SEAL_GROW``, with ``F_SEAL_SHRINK`` and ``F_SEAL_SEAL``): the container writes into it
at the shared file offset; a write past its end fails (``EPERM``, after a short write of
what still fits) instead of blocking or growing. Its pages count against the container's
own memory cgroup (they are charged to whoever writes them).

Whoever reads the log (status, stop and shutdown, ``Engine.console_log``, the node agent's
tick, the console relay) drains it: it takes the same open file from init with
``pidfd_getfd``, copies what lies before the shared offset to ``log/<ID>.console.log``,
keeps that file at most the cap long (the newest output kept, as LXC's console ring keeps
the tail) and rewinds the shared offset to 0, so the memfd is free again.

Output is dropped, by design, in three cases: what a container writes while its memfd is
full (more than the cap since the last drain); what it writes in the instant between a
drain's reading of the offset and its rewind (the rewind lets the next write land over it);
and, when a container stops by itself, what it wrote since the last drain (the memfd goes
with its last holder; ``stop`` and ``shutdown`` hold it across the exit and drain it after).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path

from engine.consolefd import check_support, open_memfd, take  # noqa: F401 - part of this module's API
from engine.errors import NotSupported

DEFAULT_SIZE = 1024 * 1024  # the size of LXC's console ring buffers, in its range
MIN_SIZE = 4096
OVERLAP = 1024  # bytes a follower remembers to find its place again in a trimmed log


def node_size() -> int:
    """The node's cap in bytes: ``CAISSON_CONSOLE_LOG_SIZE`` (a number of bytes), else 1 MiB."""
    text = os.environ.get("CAISSON_CONSOLE_LOG_SIZE", "")
    if not text.strip():
        return DEFAULT_SIZE
    if not text.strip().isdigit() or int(text) < MIN_SIZE:
        raise NotSupported(f"CAISSON_CONSOLE_LOG_SIZE: {text!r} is not a number of bytes of at least {MIN_SIZE}")
    return int(text)


def drain(console_fd: int, path: Path, size: int, create: bool = False) -> int:
    """Copy what is new in the console to the log at ``path``, trimmed to ``size``; free the console.

    Drains of one log are serialised by an flock on the log file (reopened if a trim replaced it),
    taken before the shared offset is read. Only the start and stop make the file (``create``): a
    drain racing a destroy must not leave a log behind. Returns the number of bytes copied.
    """
    while True:
        try:
            log_fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0), 0o640)
        except FileNotFoundError:
            return 0
        try:
            fcntl.flock(log_fd, fcntl.LOCK_EX)
            if os.fstat(log_fd).st_nlink == 0:
                continue  # another drain trimmed it while we waited: take the new file's lock
            end = min(os.lseek(console_fd, 0, os.SEEK_CUR), os.fstat(console_fd).st_size, size)
            if end <= 0:
                return 0
            data = _pread_all(console_fd, end, 0)
            os.lseek(console_fd, 0, os.SEEK_SET)
            _append_trimmed(log_fd, path, data, size)
            return len(data)
        finally:
            os.close(log_fd)


def drain_quietly(console_fd: int, path: Path, size: int) -> None:
    """The drain of a start or a stop, which makes the log: its failure must not hide the operation's own."""
    with contextlib.suppress(OSError):
        drain(console_fd, path, size, create=True)


def _pread_all(fd: int, length: int, offset: int) -> bytes:
    parts = []
    while length > 0:
        part = os.pread(fd, length, offset)
        if not part:
            break
        parts.append(part)
        length -= len(part)
        offset += len(part)
    return b"".join(parts)


def _append_trimmed(log_fd: int, path: Path, data: bytes, size: int) -> None:
    """Append; past the cap, replace the file by its newest ``size`` bytes (renamed into place, so a
    reader by path sees the old file or the new one, never a half-written one)."""
    current = os.fstat(log_fd).st_size
    if current + len(data) <= size:
        os.pwrite(log_fd, data, current)
        return
    data = data[-size:]
    keep = size - len(data)
    kept = _pread_all(log_fd, keep, current - keep) if keep else b""
    temp_fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.write(temp_fd, kept + data)
        os.fchmod(temp_fd, 0o640)
        os.rename(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
    finally:
        os.close(temp_fd)


def resume_offset(new_content: bytes, seen: bytes) -> int:
    """Where a follower that had read up to ``seen`` (the last bytes it read) goes on in a trimmed log.

    A trim keeps the old file's newest part at the start of the new one and appends: the first place
    ``seen`` ends in the new file is where the new output starts (with repetitive output, at worst
    some lines come twice); a kept part shorter than ``seen`` is the longest end of ``seen`` that
    starts the new file. Neither: all the follower had seen was trimmed away, the whole file is new.
    """
    if not seen:
        return 0
    at = new_content.find(seen)
    if at >= 0:
        return at + len(seen)
    for kept in range(min(len(seen), len(new_content)), 0, -1):
        if new_content[:kept] == seen[-kept:]:
            return kept
    return 0
