"""A directory tree mirrored into a private copy, in passes: suspend mode's two-pass copy, as vzdump's rsync.

vzdump's ``suspend`` mode copies the container's tree into a temporary
directory while the container runs (first pass), then freezes it and copies
again only what changed (second pass, ``rsync --delete``), thaws it, and
archives the copy. :class:`TreeSync` is that copy: each :meth:`TreeSync.run`
makes the destination the same as the source — new and changed files copied,
files gone from the source removed, a file whose kind changed replaced —
keeping owners (host ids, as they are on disk), modes, times, extended
attributes (file capabilities and ACLs too), hard links, symbolic links,
device nodes and FIFOs, and holes of sparse files. Sockets are left out (the
archive leaves them out too), as are the paths ``skip`` names.

The source is a running container's tree, written by its root while it is read,
so it is read as an untrusted tree (as snapshot mode's frozen copy is safe to
read): every directory is opened relative to its parent's fd with
``O_NOFOLLOW | O_DIRECTORY`` and named afterwards only through that fd
(``/proc/self/fd/<fd>/<entry>``, whose last component is never followed), so
no symbolic link of the container, nor a directory swapped for one between two
steps, leads the copy out of the tree. A symbolic link is copied as a link. A
regular file is opened with ``O_PATH | O_NOFOLLOW`` and checked with ``fstat``
(still a regular file, still the inode seen) before its data is read through
that fd, so a FIFO or device node put in its place is never opened (no hang,
no device side effect); FIFOs and device nodes are made anew in the copy,
never opened. An entry that changed kind while it was read is left for the
second pass, which runs with the container frozen.

A file is unchanged when its inode, type, size, modification time and device
number are those recorded when it was last copied; its metadata is copied
again when its change time moved (``chmod``, ``chown``, an extended
attribute, a new hard link). The change time cannot be set from user space,
so a change between two passes is never missed. A changed file is replaced,
never rewritten in place, so other names of its old inode keep theirs.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.errors import EngineError

from .progress import CancelCheck, check

COPY_CHUNK = 64 << 20


@dataclass
class SyncStats:
    entries: int = 0  # entries of the source walked
    copied: int = 0  # files, links, nodes and directories made or replaced in the copy
    bytes: int = 0  # file data copied
    updated: int = 0  # metadata copied again (mode, owner, xattrs, times)
    removed: int = 0  # entries of the copy that the source no longer has

    def describe(self) -> str:
        return (
            f"{self.entries} entries walked, {self.copied} copied ({self.bytes} bytes), "
            f"{self.updated} updated, {self.removed} removed"
        )


def _signature(st: os.stat_result) -> tuple:
    return stat.S_IFMT(st.st_mode), st.st_ino, st.st_size, st.st_mtime_ns, st.st_rdev


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class _Swapped(Exception):
    """The entry is no longer what ``lstat`` said (the container changed it meanwhile): copied next pass."""


def _at(dirfd: int, entry: str) -> str:
    """A name for ``entry`` of the directory open as ``dirfd``: no component before it can be swapped."""
    return f"/proc/self/fd/{dirfd}/{entry}"


def _same(st: os.stat_result, fst: os.stat_result) -> bool:
    return (fst.st_dev, fst.st_ino, stat.S_IFMT(fst.st_mode)) == (st.st_dev, st.st_ino, stat.S_IFMT(st.st_mode))


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _remove(path: str, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _copy_data(src: int, dst: int, size: int) -> int:
    """Copy ``size`` bytes from ``src`` to ``dst`` (both at offset 0), holes left as holes; the bytes copied."""
    done = pos = 0
    fast = True
    while pos < size:
        try:
            data = os.lseek(src, pos, os.SEEK_DATA)
        except OSError as err:
            if err.errno == errno.ENXIO:  # only a hole up to the end
                break
            raise
        if data >= size:
            break
        end = min(os.lseek(src, data, os.SEEK_HOLE), size)
        offset = data
        while offset < end:
            count = min(end - offset, COPY_CHUNK)
            if fast:
                try:
                    written = os.copy_file_range(src, dst, count, offset, offset)
                except OSError as err:
                    if err.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                        raise
                    fast = False
                    continue
            else:
                chunk = os.pread(src, min(count, 1 << 20), offset)
                written = os.pwrite(dst, chunk, offset) if chunk else 0
            if written == 0:  # the file shrank under the copy: the next pass copies it again
                break
            offset += written
            done += written
        if offset < end:
            break
        pos = end
    os.ftruncate(dst, size)
    return done


def _copy_xattrs(src: str | int, dst: str, is_link: bool) -> None:
    """``src`` is a path whose last component is not followed, or an open directory's fd."""
    nofollow = {} if isinstance(src, int) else {"follow_symlinks": False}
    try:
        names = set(os.listxattr(src, **nofollow))
        present = set(os.listxattr(dst, follow_symlinks=False))
    except OSError as err:
        if err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP) and is_link:
            return
        raise
    for name in present - names:
        os.removexattr(dst, name, follow_symlinks=False)
    for name in sorted(names):
        value = os.getxattr(src, name, **nofollow)
        try:
            os.setxattr(dst, name, value, follow_symlinks=False)
        except OSError as err:
            if is_link and err.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                continue  # user.* attributes cannot be set on a symbolic link; the archive has none either
            raise EngineError(f"cannot keep extended attribute '{name}' of {src} in {dst}: {err.strerror}") from err


class TreeSync:
    """Make ``dst`` the same tree as ``src`` with each :meth:`run`; see the module's docstring.

    ``skip(name)`` gets a member name as the archive writes it (``./etc/x``) and leaves the path (and what
    is below it) out of the copy. ``dst`` must not exist, or be an empty directory, before the first run.
    """

    def __init__(
        self, src: Path, dst: Path, skip: Callable[[str], bool] | None = None, cancel: CancelCheck | None = None
    ):
        self.src, self.dst, self.skip, self.cancel = os.fspath(src), os.fspath(dst), skip, cancel
        self.records: dict[str, tuple] = {}  # member name -> (signature, change time) when last copied
        self.passes = 0

    def run(self) -> SyncStats:
        self.passes += 1
        self.stats = SyncStats()
        self.links: dict[tuple[int, int], str] = {}  # a source inode -> its first name in the copy, this pass
        try:
            rootfd = os.open(self.src, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the engine's own path
        except NotADirectoryError:
            raise EngineError(f"{self.src} is not a directory") from None
        try:
            root = os.fstat(rootfd)
            self.root_dev = root.st_dev
            self._entry(rootfd, self.dst, ".", root)
        finally:
            os.close(rootfd)
        return self.stats

    def _dir(self, dirfd: int, dst: str, name: str) -> bool:
        """Sync the entries of one directory (open as ``dirfd``); whether the copy's directory had
        entries made or removed."""
        changed = False
        kept = set()
        for entry in sorted(os.listdir(dirfd)):
            member = f"{name}/{entry}"
            if self.skip is not None and self.skip(member):
                continue
            path = _at(dirfd, entry)
            st = _lstat(path)
            if st is None or stat.S_ISSOCK(st.st_mode):  # gone while the container runs; sockets are not kept
                continue
            if st.st_dev != self.root_dev:
                raise EngineError(f"refusing to copy {member}: it is on another filesystem (a mount?)")
            kept.add(entry)
            target = os.path.join(dst, entry)
            try:
                changed |= self._entry(path, target, member, st)
            except _Swapped:
                self.records.pop(member, None)  # whatever the copy holds there is replaced next pass
                changed = True
        for entry in os.listdir(dst):
            if entry not in kept:
                target = os.path.join(dst, entry)
                _remove(target, os.lstat(target))  # its records stay: a path made again is copied again
                self.stats.removed += 1
                changed = True
        return changed

    def _entry(self, src: str | int, dst: str, name: str, st: os.stat_result) -> bool:
        """Sync one entry (``src``: its name through its parent's fd, or the root's own fd); whether it
        was made (or replaced) in the copy.  Raises _Swapped when it changed kind while read."""
        check(self.cancel, "backup")
        self.stats.entries += 1
        kind = stat.S_IFMT(st.st_mode)
        signature = _signature(st)
        old = self.records.get(name)
        current = _lstat(dst)
        if current is not None and stat.S_IFMT(current.st_mode) != kind:
            _remove(dst, current)
            current = None
        made = False
        if kind == stat.S_IFDIR:
            dirfd = src if isinstance(src, int) else self._open_dir(src, st)
            try:
                if current is None:
                    os.mkdir(dst, 0o700)
                    made = True
                children = self._dir(dirfd, dst, name)
                if made or children or old != (signature, st.st_ctime_ns):
                    self._metadata(dirfd, dst, st)
            finally:
                if dirfd is not src:
                    os.close(dirfd)
            self.records[name] = (signature, st.st_ctime_ns)
            if made:
                self.stats.copied += 1
            return made
        if kind == stat.S_IFREG and st.st_nlink > 1:
            first = self.links.get((st.st_dev, st.st_ino))
            if first is not None:
                self.records[name] = (signature, st.st_ctime_ns)
                if current is not None and current.st_ino == os.lstat(first).st_ino:
                    return False
                if current is not None:
                    os.unlink(dst)
                os.link(first, dst)
                self.stats.copied += 1
                return True
            self.links[(st.st_dev, st.st_ino)] = dst
        if current is not None and old is not None and old[0] == signature:
            if old[1] != st.st_ctime_ns:
                self._metadata(src, dst, st)
                self.stats.updated += 1
            self.records[name] = (signature, st.st_ctime_ns)
            return False
        if current is not None:
            os.unlink(dst)
        if kind == stat.S_IFREG:
            self._copy_file(src, dst, st)
        elif kind == stat.S_IFLNK:
            try:
                target = os.readlink(src)  # the link's own text: it is never followed
            except OSError as err:
                if err.errno in (errno.EINVAL, errno.ENOENT):
                    raise _Swapped(name) from None
                raise
            os.symlink(target, dst)
        else:  # character and block devices, FIFOs
            os.mknod(dst, kind | 0o600, st.st_rdev)
        self._metadata(src, dst, st)
        self.records[name] = (signature, st.st_ctime_ns)
        self.stats.copied += 1
        return True

    @staticmethod
    def _open_dir(src: str, st: os.stat_result) -> int:
        """The directory ``lstat`` saw, opened without following a link put in its place."""
        try:
            fd = os.open(src, _DIR_FLAGS)
        except (NotADirectoryError, FileNotFoundError):
            raise _Swapped(src) from None
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise _Swapped(src) from None
            raise
        if not _same(st, os.fstat(fd)):
            os.close(fd)
            raise _Swapped(src)
        return fd

    @staticmethod
    def _open_file(src: str, st: os.stat_result) -> int:
        """The regular file ``lstat`` saw, open for reading; never a FIFO, device or link put in its place.

        ``O_PATH`` opens no device and waits on no FIFO; once ``fstat`` shows the inode seen (a
        regular file), it is reopened for reading through its own fd, with no path walked again.
        """
        try:
            handle = os.open(src, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise _Swapped(src) from None
        try:
            if not _same(st, os.fstat(handle)):
                raise _Swapped(src)
            flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC  # the fd's magic link: no path walked
            try:
                fd = os.open(f"/proc/self/fd/{handle}", flags | os.O_NOATIME)
            except PermissionError:
                fd = os.open(f"/proc/self/fd/{handle}", flags)
        finally:
            os.close(handle)
        if not _same(st, os.fstat(fd)):  # cannot differ (same inode), but the read below relies on it
            os.close(fd)
            raise _Swapped(src)
        return fd

    def _copy_file(self, src: str, dst: str, st: os.stat_result) -> None:
        source = self._open_file(src, st)
        try:
            target = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                self.stats.bytes += _copy_data(source, target, st.st_size)
            finally:
                os.close(target)
        finally:
            os.close(source)

    def _metadata(self, src: str | int, dst: str, st: os.stat_result) -> None:
        """Owner, then mode (a chown clears set-id bits), then xattrs (file capabilities), then times."""
        is_link = stat.S_ISLNK(st.st_mode)
        os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
        if not is_link:
            os.chmod(dst, stat.S_IMODE(st.st_mode))
        _copy_xattrs(src, dst, is_link)
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


__all__ = ["SyncStats", "TreeSync"]
