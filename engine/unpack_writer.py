"""The writer every extraction and copy goes through: entries made safely under a staging root.

Archives come from the network and templates from other users, so every entry
is created here, relative to directory fds opened with O_NOFOLLOW: no step can
follow a symlink, not even one the archive just made. A path that climbs out of
the tree, a symlink that climbs above the root, a hard link to something not
made earlier, a device node in an unprivileged rootfs, ids outside the map, a
tree larger than allowed: each is refused (UnsafeArchive) before anything is made
for it. Work happens in a hidden sibling of the target (``staging``), renamed
into place on success and removed on any failure, so a target is either complete
or absent. Ownership is shifted into the id map as entries are made.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .errors import AlreadyExists, EngineError, NotFound, UnsafeArchive, ValidationError
from .idmap import IdMap, remap_file_caps

CHUNK = 1 << 20
_ZERO = bytes(CHUNK)
DIR_FD_CACHE = 64
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
CAPS = "security.capability"


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


@dataclass
class ExtractStats:
    """What was made; devices_skipped counts dev/ nodes (and sockets) left to the engine."""

    members: int = 0
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    devices: int = 0
    devices_skipped: int = 0
    xattrs_skipped: int = 0
    excluded: int = 0  # members left out by ``exclude``
    bytes: int = 0


@dataclass
class Entry:
    """One thing to create, from a tar member or a directory walk; ids are container ids."""

    name: str
    kind: str  # f=file d=dir l=symlink h=hard link c/b=char/block device p=fifo
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime_ns: int | None = None
    link: str = ""
    rdev: int = 0
    xattrs: dict[str, bytes] | None = None


def _umask() -> int:
    """This process's umask, read without changing it (os.umask would, for every thread)."""
    try:
        with open("/proc/self/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o777  # unknown: never rely on it (every file then gets its chmod)


def split_path(name: str) -> list[str]:
    """Components of an in-tree path; ValueError if it could leave the tree."""
    while name.startswith("./"):
        name = name[2:]
    if name.startswith("/"):
        raise ValueError("absolute paths are not allowed")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError("'..' components are not allowed")
    return parts


class Writer:
    """Creates entries under a fresh root that only root can enter until finish()."""

    def __init__(
        self,
        root: Path,
        idmap: IdMap | None,
        source: str,
        noun: str,
        max_bytes: int | None,
        skip_devices: bool = False,
        exclude: tuple[tuple[str, ...], ...] = (),
    ):
        self.idmap, self.source, self.noun, self.max_bytes = idmap, source, noun, max_bytes
        self.skip_devices, self.exclude = skip_devices, exclude
        self.stats = ExtractStats()
        self.kinds: dict[str, str] = {"": "d"}  # path -> kind; "s" = skipped device
        self.pending: dict[str, tuple[int, int | None]] = {"": (0o755, None)}  # dir modes, mtimes
        self.mapped_root = (0, 0) if idmap is None else (idmap.host_uid(0), idmap.host_gid(0))
        self.root_owner = self.mapped_root
        self.root_fd = os.open(root, DIR_FLAGS)
        # Open directory fds by path, most recently used last: tars go directory by directory, and a
        # walk starts from the deepest cached ancestor instead of the root (fewer opens, the main cost).
        self._dirs: OrderedDict[str, int] = OrderedDict()
        self._owners: dict[tuple[int, int], tuple[int, int]] = {}
        self._umask = _umask()

    def fail(self, e: Entry, problem: str) -> UnsafeArchive:
        return UnsafeArchive(f"{self.source}: {self.noun} '{e.name}': {problem}", key=e.name)

    def close(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()
        os.close(self.root_fd)

    def add(self, e: Entry, data: Readable | Iterable[bytes | memoryview] | None = None) -> None:
        """Create one entry (a file's bytes: a reader, or the chunks themselves); OS errors
        (disk full, ...) become EngineErrors naming it."""
        self.stats.members += 1
        try:
            self._add(e, data)
        except OSError as err:
            raise EngineError(f"{self.source}: {self.noun} '{e.name}': {err.strerror or err}") from err

    def _owner(self, e: Entry) -> tuple[int, int]:
        if self.idmap is None:
            return e.uid, e.gid
        owner = self._owners.get((e.uid, e.gid))  # a rootfs has few owners: map each pair once
        if owner is None:
            try:
                owner = self.idmap.host_uid(e.uid), self.idmap.host_gid(e.gid)
            except ValidationError as err:
                raise self.fail(e, str(err)) from None
            self._owners[e.uid, e.gid] = owner
        return owner

    def _add(self, e: Entry, data) -> None:
        try:
            parts = split_path(e.name) if e.name else split_path("/")  # tarfile turns a "/" dir into ""
        except ValueError as err:
            raise self.fail(e, str(err)) from None
        if not parts:  # "." : the new root's own attributes
            if e.kind != "d":
                raise self.fail(e, "the root must be a directory")
            self.root_owner = self._owner(e)
            self._xattrs(e, self.root_fd)
            self.pending[""] = (e.mode, e.mtime_ns)
            return
        key, name = "/".join(parts), parts[-1]
        if self.exclude and any(tuple(parts[: len(x)]) == x for x in self.exclude):
            self.kinds[key] = "x"
            self.stats.excluded += 1
            return
        if e.kind in "cb" and self.skip_devices:
            self.kinds[key] = "s"
            self.stats.devices_skipped += 1
            return
        if e.kind in "cbp":
            if parts[0] == "dev" and len(parts) > 1:  # the engine provides /dev at start
                self.kinds[key] = "s"
                self.stats.devices_skipped += 1
                return
            if self.idmap is not None and e.kind != "p":  # a FIFO is harmless; a device node is not
                raise self.fail(e, "device nodes are refused in an unprivileged rootfs")
        pfd = self._parent(e, parts)
        old = self.kinds.get(key)
        if old == "d" and e.kind != "d":
            raise self.fail(e, "would replace a directory")
        if old not in (None, "d", "s"):  # a later member replaces an earlier one, as with tar
            os.unlink(name, dir_fd=pfd)
            del self.kinds[key]
        if e.kind == "h":
            return self._hardlink(e, key, name, pfd)
        if e.kind == "d":
            self._dir(e, key, name, pfd, exists=old == "d")
        elif e.kind == "f":
            self._file(e, name, pfd, data)
        else:
            if e.kind == "l":
                self._check_symlink(e, parts)
                os.symlink(e.link, name, dir_fd=pfd)
                self.stats.symlinks += 1
            else:
                if e.kind == "p":
                    os.mkfifo(name, 0o600, dir_fd=pfd)
                else:
                    os.mknod(name, (stat.S_IFCHR if e.kind == "c" else stat.S_IFBLK) | 0o600, e.rdev, dir_fd=pfd)
                self.stats.devices += 1
            os.chown(name, *self._owner(e), dir_fd=pfd, follow_symlinks=False)
            self._xattrs(e, f"/proc/self/fd/{pfd}/{name}")
            if e.kind != "l":  # the node made just above, in a tree only root can enter
                os.chmod(name, e.mode, dir_fd=pfd)
            if e.mtime_ns is not None:
                os.utime(name, ns=(e.mtime_ns, e.mtime_ns), dir_fd=pfd, follow_symlinks=False)
        self.kinds[key] = e.kind

    def _check_symlink(self, e: Entry, parts: list[str]) -> None:
        # Absolute targets are kept: real rootfs have many (/etc/alternatives/*), the
        # container resolves them inside its own root at run time, and nothing here
        # ever follows a symlink, so they cannot redirect the extraction. A relative
        # target that climbs above the root can only be an attempt to point outside.
        if not e.link:
            raise self.fail(e, "empty symlink target")
        depth = len(parts) - 1
        for p in [] if e.link.startswith("/") else e.link.split("/"):
            depth += -1 if p == ".." else 0 if p in ("", ".") else 1
            if depth < 0:
                raise self.fail(e, f"symlink target '{e.link}' climbs above the root")

    def _dir(self, e: Entry, key: str, name: str, pfd: int, exists: bool) -> None:
        if not exists:
            os.mkdir(name, 0o700, dir_fd=pfd)  # final mode at finish(): read-only dirs get filled first
        fd = os.open(name, DIR_FLAGS, dir_fd=pfd)
        try:
            os.fchown(fd, *self._owner(e))
            self._xattrs(e, fd)
        except BaseException:
            os.close(fd)
            raise
        self._remember_dir(key, fd)  # its members come next: keep the fd for them
        self.pending[key] = (e.mode, e.mtime_ns)
        self.stats.dirs += 1

    def _remember_dir(self, key: str, fd: int) -> None:
        old = self._dirs.pop(key, None)
        if old is not None:
            os.close(old)
        self._dirs[key] = fd
        if len(self._dirs) > DIR_FD_CACHE:
            os.close(self._dirs.popitem(last=False)[1])

    def _file(self, e: Entry, name: str, pfd: int, data) -> None:
        owner = self._owner(e)
        # The final mode at once when the umask keeps it and chown would not clear it (no set-id bit):
        # one chmod less per file. The staging tree is root's alone until finish() in either case.
        early = not e.mode & (0o7000 | self._umask)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, e.mode if early else 0o600, dir_fd=pfd)
        try:
            size, hole = 0, False
            chunks = iter(lambda: data.read(CHUNK), b"") if hasattr(data, "read") else data or ()
            for chunk in chunks:
                size += len(chunk)
                if self.max_bytes is not None and self.stats.bytes + size > self.max_bytes:
                    raise UnsafeArchive(
                        f"{self.source}: archive expands beyond {self.max_bytes} bytes (at {self.noun} '{e.name}')",
                        key=e.name,
                    )
                hole = _ZERO.startswith(chunk)  # memcmp, without copying a slice of _ZERO
                if hole:  # leave a hole instead of writing zeros
                    os.lseek(fd, len(chunk), os.SEEK_CUR)
                    continue
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            if hole:
                os.ftruncate(fd, size)  # extends over a trailing hole
            os.fchown(fd, *owner)  # before the caps xattr and the mode: chown clears both
            if e.xattrs:
                self._xattrs(e, fd)
            if not early:
                os.fchmod(fd, e.mode)
            if e.mtime_ns is not None:
                os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
        finally:
            os.close(fd)
        self.stats.files += 1
        self.stats.bytes += size

    def _hardlink(self, e: Entry, key: str, name: str, pfd: int) -> None:
        try:
            tparts = split_path(e.link)
        except ValueError as err:
            raise self.fail(e, f"hard link target '{e.link}' is outside the tree: {err}") from None
        kind = self.kinds.get("/".join(tparts)) if tparts else "d"
        if kind in ("s", "x"):
            self.kinds[key] = kind
            if kind == "s":
                self.stats.devices_skipped += 1
            else:
                self.stats.excluded += 1
            return
        if kind in (None, "l", "d"):
            what = {None: "does not exist earlier in the tree", "l": "is a symlink", "d": "is a directory"}
            raise self.fail(e, f"hard link target '{e.link}' {what[kind]}")
        tfd = self._walk(e, tparts[:-1], create=False)
        try:
            os.link(tparts[-1], name, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tfd)
        self.kinds[key] = kind
        self.stats.hardlinks += 1

    def _xattrs(self, e: Entry, where: int | str) -> None:
        """Set xattrs on an fd, or on a path without following its last component."""
        for xname, value in (e.xattrs or {}).items():
            if xname == CAPS and self.idmap is not None:
                try:
                    value = remap_file_caps(value, self.idmap.host_uid)
                except ValidationError as err:
                    raise self.fail(e, f"file capability root: {err}") from None
            try:
                os.setxattr(where, xname, value, **({} if isinstance(where, int) else {"follow_symlinks": False}))
            except OSError as err:
                if err.errno != errno.EOPNOTSUPP:
                    raise
                self.stats.xattrs_skipped += 1

    def _parent(self, e: Entry, parts: list[str]) -> int:
        """An fd of the entry's parent dir, made if missing; cached (fds stay valid: directories are
        never replaced or removed during an extraction)."""
        key = "/".join(parts[:-1])
        fd = self._dirs.get(key)
        if fd is not None:
            self._dirs.move_to_end(key)
            return fd
        start, base = 0, self.root_fd
        for depth in range(len(parts) - 2, 0, -1):
            cached = self._dirs.get("/".join(parts[:depth]))
            if cached is not None:
                start, base = depth, cached
                break
        fd = self._walk(e, parts[:-1], create=True, start=start, base=base)
        self._remember_dir(key, fd)
        return fd

    def _walk(self, e: Entry, parts: list[str], create: bool, start: int = 0, base: int | None = None) -> int:
        """A new fd of the directory at parts (from ``base``, the fd of ``parts[:start]``), refusing to
        pass through anything but directories."""
        fd = os.dup(self.root_fd if base is None else base)
        try:
            for i, comp in enumerate(parts[start:], start):
                key = "/".join(parts[: i + 1])
                kind = self.kinds.get(key)
                if kind is None and create:
                    os.mkdir(comp, 0o700, dir_fd=fd)
                    os.chown(comp, *self.mapped_root, dir_fd=fd, follow_symlinks=False)
                    self.kinds[key], self.pending[key] = "d", (0o755, None)
                elif kind != "d":
                    what = "passes through the symlink" if kind == "l" else "needs a directory at"
                    raise self.fail(e, f"path {what} '{key}'")
                fd, old = os.open(comp, DIR_FLAGS, dir_fd=fd), fd
                os.close(old)
            return fd
        except BaseException:
            os.close(fd)
            raise

    def finish(self) -> None:
        """Apply directory modes and mtimes last, and open the root to its owner."""
        for key, (mode, mtime) in self.pending.items():
            if not key:
                os.fchown(self.root_fd, *self.root_owner)
                os.fchmod(self.root_fd, mode)
                if mtime is not None:
                    os.utime(self.root_fd, ns=(mtime, mtime))
                continue
            # Through the (cached) parent's fd: ``key`` is a directory made here, never replaced.
            parts = key.split("/")
            pfd = self._parent(Entry(key, "d"), parts)
            os.chmod(parts[-1], mode, dir_fd=pfd)
            if mtime is not None:
                os.utime(parts[-1], ns=(mtime, mtime), dir_fd=pfd, follow_symlinks=False)


@contextlib.contextmanager
def staging(target: Path) -> Iterator[Path]:
    """A private hidden sibling of target, renamed to target on success, removed on any failure."""
    if os.path.lexists(target):
        raise AlreadyExists(f"{target} already exists")
    if not target.parent.is_dir():
        raise NotFound(f"parent directory {target.parent} does not exist")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield tmp
        if os.path.lexists(target):  # appeared meanwhile: never merge into it
            raise AlreadyExists(f"{target} already exists")
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
