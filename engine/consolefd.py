"""A container's console as a file descriptor: the sealed memfd init writes to, and taking it back from init.

The memfd is made before init's fork (``open_memfd``) and is init's stdout and stderr; a reader takes the
same open file from init with ``pidfd_getfd`` (``take``) and checks it is still a sealed memfd no longer
than the cap. :mod:`engine.consolelog` (the log file: drain, trim, follow) builds on this; the node's tty
holder (:mod:`engine.ttyholder`) needs only this, and imports only what it needs (a process per node:
every module it loads is resident memory for as long as any container has a terminal).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat

from engine import procfs
from engine.errors import NotSupported

MEMFD_NAME = "caisson-console"
SEALS = fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL
SYS_PIDFD_GETFD = 438  # the same number on every architecture (the unified syscall table, Linux 5.6)

_libc = ctypes.CDLL(None, use_errno=True)


def _pidfd_getfd(pidfd: int, target: int) -> int:
    fd = _libc.syscall(SYS_PIDFD_GETFD, pidfd, target, 0)
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return fd


def check_support() -> None:
    """Refuse, naming what is missing, where the kernel cannot hand a container's console to a reader."""
    if not hasattr(os, "pidfd_open"):
        raise NotSupported("console log: this Python or kernel lacks pidfd_open (Linux 5.3)")
    try:
        _pidfd_getfd(-1, 0)
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            raise NotSupported(
                "console log: the kernel lacks pidfd_getfd (Linux 5.6), needed to read a container's capped console"
            ) from None


def open_memfd(size: int) -> int:
    """The console for a new init: ``size`` bytes, sealed against growing or shrinking, close-on-exec."""
    fd = os.memfd_create(MEMFD_NAME, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, size)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_console(fd: int, size: int) -> bool:
    """Our memfd, or one like it: a sealed regular file no longer than the cap (nothing the container
    swapped in can make a drain read more than that, nor block on a pipe or a device)."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > size:
        return False
    try:
        return fcntl.fcntl(fd, fcntl.F_GET_SEALS) & SEALS == SEALS
    except OSError:
        return False


def take(pid: int, starttime: int, size: int) -> int | None:
    """A dup of the console of init ``pid`` (its fd 1, else 2), or None (gone, or init closed it)."""
    check_support()
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    try:
        if procfs.proc_starttime(pid) != starttime:
            return None  # the pid was reused; the pidfd names the process checked just now
        for target in (1, 2):
            try:
                fd = _pidfd_getfd(pidfd, target)
            except OSError as exc:
                if exc.errno in (errno.EBADF, errno.ESRCH):
                    continue
                raise
            if _is_console(fd, size):
                return fd
            os.close(fd)
        return None
    finally:
        os.close(pidfd)
