"""Atomic file replacement: a crash leaves the old file or the new one, never a torn one.

A temporary file in the same directory, fsync, rename, then fsync of the directory.  Config files,
firewall rules, run records and snapshot metadata are all written this way.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: str | bytes, mode: int = 0o640, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file, never a torn one.

    ``durable=False`` skips the fsyncs, for caches that need only atomicity (run records on tmpfs).
    """
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.parent / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if not durable:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_atomic_many(items: list[tuple[Path, str]], mode: int = 0o640) -> None:
    """Replace each ``(path, data)`` as :func:`write_atomic` does, the files' flushes issued together.

    Each file is replaced atomically and all are durable on return, as with one ``write_atomic`` each; but
    the data flushes run at the same time, then the renames' directory flushes do, so a journaling file
    system (ext4, xfs) commits them in one or two journal transactions instead of one per ``fsync``: the
    cost of a snapshot of an overlay volume was mostly these flushes.  On failure no temporary file stays;
    files already renamed stay replaced (the caller undoes, as after a ``write_atomic`` that succeeded).
    """
    from concurrent.futures import ThreadPoolExecutor

    staged: list[tuple[Path, Path, int]] = []
    try:
        for path, data in items:
            tmp = path.parent / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
            staged.append((tmp, path, fd))
            os.fchmod(fd, mode)
            payload = data.encode()
            while payload:
                payload = payload[os.write(fd, payload) :]
        with ThreadPoolExecutor(max_workers=len(staged) or 1) as pool:
            list(pool.map(os.fsync, [fd for _, _, fd in staged]))
            for tmp, path, _ in staged:
                os.rename(tmp, path)
            dirs = [os.open(d, os.O_RDONLY | os.O_DIRECTORY) for d in {p.parent for _, p, _ in staged}]
            try:
                list(pool.map(os.fsync, dirs))
            finally:
                for fd in dirs:
                    os.close(fd)
    finally:
        for tmp, _, fd in staged:
            os.close(fd)
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
