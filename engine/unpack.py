"""Build a container rootfs from a tarball or a template directory, safely.

Archives come from the network and templates from other users, so every entry
is created here, relative to directory fds opened with O_NOFOLLOW: no step can
follow a symlink, not even one the archive just made (tarfile's extraction
filters are not used). Work happens in a hidden sibling of the target, renamed
into place on success and removed on any failure, so a target is either
complete or absent. Ownership is shifted into the id map as entries are made.
"""

from __future__ import annotations

import bz2
import contextlib
import errno
import gzip
import lzma
import os
import queue
import shutil
import stat
import tarfile
import tempfile
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, cast

from .errors import AlreadyExists, EngineError, NotFound, UnsafeArchive, ValidationError
from .idmap import IdMap, remap_file_caps
from .tarstream import Member, TarStream

CHUNK = 1 << 20
TAR_BUFSIZE = 1 << 15  # tarfile's stream copies what is left of its buffer at every read: keep it small
_ZERO = bytes(CHUNK)
DIR_FD_CACHE = 64
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAGIC = ((b"\x1f\x8b", "gz"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zst"), (b"BZh", "bz2"))
_KINDS = {
    stat.S_IFDIR: "d",
    stat.S_IFREG: "f",
    stat.S_IFLNK: "l",
    stat.S_IFCHR: "c",
    stat.S_IFBLK: "b",
    stat.S_IFIFO: "p",
}
_XATTR, _CAPS = "SCHILY.xattr.", "security.capability"


class _Readable(Protocol):
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
class _Entry:
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


def _split(name: str) -> list[str]:
    """Components of an in-tree path; ValueError if it could leave the tree."""
    while name.startswith("./"):
        name = name[2:]
    if name.startswith("/"):
        raise ValueError("absolute paths are not allowed")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError("'..' components are not allowed")
    return parts


class _Writer:
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
        self.root_fd = os.open(root, _DIR)
        # Open directory fds by path, most recently used last: tars go directory by directory, and a
        # walk starts from the deepest cached ancestor instead of the root (fewer opens, the main cost).
        self._dirs: OrderedDict[str, int] = OrderedDict()
        self._owners: dict[tuple[int, int], tuple[int, int]] = {}
        self._umask = _umask()

    def fail(self, e: _Entry, problem: str) -> UnsafeArchive:
        return UnsafeArchive(f"{self.source}: {self.noun} '{e.name}': {problem}", key=e.name)

    def close(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()
        os.close(self.root_fd)

    def add(self, e: _Entry, data: _Readable | Iterable[bytes | memoryview] | None = None) -> None:
        """Create one entry (a file's bytes: a reader, or the chunks themselves); OS errors
        (disk full, ...) become EngineErrors naming it."""
        self.stats.members += 1
        try:
            self._add(e, data)
        except OSError as err:
            raise EngineError(f"{self.source}: {self.noun} '{e.name}': {err.strerror or err}") from err

    def _owner(self, e: _Entry) -> tuple[int, int]:
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

    def _add(self, e: _Entry, data) -> None:
        try:
            parts = _split(e.name) if e.name else _split("/")  # tarfile turns a "/" dir into ""
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

    def _check_symlink(self, e: _Entry, parts: list[str]) -> None:
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

    def _dir(self, e: _Entry, key: str, name: str, pfd: int, exists: bool) -> None:
        if not exists:
            os.mkdir(name, 0o700, dir_fd=pfd)  # final mode at finish(): read-only dirs get filled first
        fd = os.open(name, _DIR, dir_fd=pfd)
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

    def _file(self, e: _Entry, name: str, pfd: int, data) -> None:
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

    def _hardlink(self, e: _Entry, key: str, name: str, pfd: int) -> None:
        try:
            tparts = _split(e.link)
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

    def _xattrs(self, e: _Entry, where: int | str) -> None:
        """Set xattrs on an fd, or on a path without following its last component."""
        for xname, value in (e.xattrs or {}).items():
            if xname == _CAPS and self.idmap is not None:
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

    def _parent(self, e: _Entry, parts: list[str]) -> int:
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

    def _walk(self, e: _Entry, parts: list[str], create: bool, start: int = 0, base: int | None = None) -> int:
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
                fd, old = os.open(comp, _DIR, dir_fd=fd), fd
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
            pfd = self._parent(_Entry(key, "d"), parts)
            os.chmod(parts[-1], mode, dir_fd=pfd)
            if mtime is not None:
                os.utime(parts[-1], ns=(mtime, mtime), dir_fd=pfd, follow_symlinks=False)


@contextlib.contextmanager
def _staging(target: Path) -> Iterator[Path]:
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


class _Info(tarfile.TarInfo):
    """Notes the end-of-archive block: without it tarfile ends a cut archive silently."""

    @classmethod
    def fromtarfile(cls, tf: tarfile.TarFile) -> _Info:
        try:
            return super().fromtarfile(tf)
        except tarfile.EOFHeaderError:  # type: ignore[attr-defined]  # a zero block
            tf.caisson_end_seen = True  # type: ignore[attr-defined]
            raise


class _Decoded:
    """Decompressed archive bytes; a decoder's complaint (bad data, CRC, stream cut short)
    becomes tarfile.ReadError, so it is reported as a corrupt archive, not a host failure."""

    def __init__(self, f: _Readable, errors: tuple[type[BaseException], ...], tap: Callable[[bytes], object] | None):
        self.f, self.errors, self.tap = f, errors, tap

    def read(self, n: int = -1) -> bytes:
        try:
            data = self.f.read(n)
            if self.tap is not None:
                self.tap(data)
            return data
        except self.errors as err:
            if isinstance(err, OSError) and err.errno is not None:  # a real I/O error
                raise
            raise tarfile.ReadError(str(err) or type(err).__name__) from err


class _Prefetch:
    """Decompresses ahead in a thread: the decoders (zstd, zlib, lzma) and the file reads release
    the GIL, so decompression runs beside the extraction's system calls instead of between them.

    ``read`` hands out the chunks in order; an error of the thread is raised in the reader, at the
    point of the stream where it happened. ``close`` stops the thread (it is a daemon, bounded by
    a small queue, so an abandoned reader never keeps much memory)."""

    def __init__(self, f: _Decoded, where: Callable[[], int], depth: int = 8):
        self.f, self.where = f, where
        self.chunks: queue.Queue[tuple[bytes, int] | BaseException] = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.buf, self.pos, self.eof = b"", 0, False
        self.consumed = 0  # the compressed file's offset at the end of the chunk being read
        self.thread = threading.Thread(target=self._run, name="unpack-decompress", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        item: tuple[bytes, int] | BaseException
        while not self.stop.is_set():
            try:
                item = (self.f.read(CHUNK), self.where())
            except BaseException as err:  # noqa: BLE001 - handed to the reading thread
                item = err
            while not self.stop.is_set():
                try:
                    self.chunks.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if not isinstance(item, tuple) or not item[0]:
                return

    def read(self, n: int = -1) -> bytes:
        if self.pos >= len(self.buf):
            if self.eof:
                return b""
            item = self.chunks.get()
            if isinstance(item, BaseException):
                self.eof = True
                raise item
            chunk, self.consumed = item
            if not chunk:
                self.eof = True
                return b""
            self.buf, self.pos = chunk, 0
        end = len(self.buf) if n < 0 else min(len(self.buf), self.pos + n)
        data = self.buf[self.pos : end] if (self.pos, end) != (0, len(self.buf)) else self.buf
        self.pos = end
        return data

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def open_archive(
    archive: Path, raw: BinaryIO, prefetch: bool = False, tap: Callable[[bytes], object] | None = None
) -> tuple[tarfile.TarFile, _Decoded]:
    """A streaming tar reader over ``raw`` (the open file of ``archive``), whatever its compression.

    With ``prefetch`` the archive is decompressed ahead in a thread (:class:`_Prefetch`); the caller
    then closes the returned stream when done, and reads how far the archive file was consumed from
    its ``consumed`` (``raw.tell()`` runs ahead by what the thread decompressed in advance).
    Returns the reader and the decompressed stream (read it to its end to check a final checksum).
    ``tap`` sees every decompressed chunk (an OCI layer's uncompressed digest is hashed there, in the
    prefetch thread). Members come in order, never the whole archive in memory. Compression comes from magic
    bytes (suffixes lie); the stdlib file readers check CRCs and cut-offs: a corrupt stream
    raises tarfile.ReadError, an unknown format ValidationError.
    """
    data, fmt = _decoder(archive, raw, prefetch, tap)
    try:  # stream mode reads the first header already
        return tarfile.open(fileobj=cast(BinaryIO, data), mode="r|", tarinfo=_Info, bufsize=TAR_BUFSIZE), data
    except tarfile.TarError as err:
        if prefetch:
            data.close()  # type: ignore[attr-defined]
        detail = f"no data could be decompressed ({fmt})" if fmt != "tar" and str(err) == "empty file" else err
        raise ValidationError(f"{archive}: corrupt or truncated archive: {detail}") from err


def _decoder(
    archive: Path, raw: BinaryIO, prefetch: bool, tap: Callable[[bytes], object] | None
) -> tuple[_Decoded, str]:
    """The decompressed bytes of ``raw`` and the compression, told by magic bytes (see open_archive)."""
    seekable = raw.seekable()  # a pipe (a migration's stream) is not
    if seekable:
        head = raw.read(512)
        raw.seek(0)
    else:  # a pipe (a migration's stream): look without consuming
        head = raw.peek(512)[:512]  # type: ignore[attr-defined]
    fmt = next((f for magic, f in _MAGIC if head.startswith(magic)), "tar" if head[257:262] == b"ustar" else "")
    errors: tuple[type[BaseException], ...] = (EOFError, OSError, zlib.error, lzma.LZMAError)
    f: _Readable
    if fmt == "gz":
        f = gzip.GzipFile(fileobj=raw, mode="rb")
    elif fmt == "xz":
        f = lzma.LZMAFile(raw)  # noqa: SIM115 - these wrappers never close raw
    elif fmt == "bz2":
        f = bz2.BZ2File(raw)
    elif fmt == "zst":
        try:
            import zstandard
        except ImportError:
            raise EngineError("zstd archives need the 'zstandard' Python package") from None
        f = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=False)
        errors += (zstandard.ZstdError,)
    elif fmt == "tar":
        f = raw
    else:
        raise ValidationError(f"{archive}: unknown archive format (not a tar, tar.gz, tar.xz or tar.zst)")
    data: _Decoded = _Decoded(f, errors, tap)
    if prefetch:
        data = cast(_Decoded, _Prefetch(data, raw.tell if seekable else lambda: 0))
    return data, fmt


def _member_entry(m: tarfile.TarInfo) -> _Entry:
    kind = (
        "f"
        if m.isreg()
        else "d"
        if m.isdir()
        else "l"
        if m.issym()
        else "h"
        if m.islnk()
        else "c"
        if m.ischr()
        else "b"
        if m.isblk()
        else "p"
        if m.isfifo()
        else ""
    )
    xattrs = {
        k[len(_XATTR) :]: v.encode("utf-8", "surrogateescape") for k, v in m.pax_headers.items() if k.startswith(_XATTR)
    }
    mtime = m.mtime * 10**9 if isinstance(m.mtime, int) else round(m.mtime * 1e9)  # pax: a float
    return _Entry(
        m.name,
        kind,
        m.mode & 0o7777,
        m.uid,
        m.gid,
        mtime,
        m.linkname,
        os.makedev(m.devmajor, m.devminor) if kind in ("c", "b") else 0,
        xattrs,
    )


def extract_archive(
    archive: Path,
    target: Path,
    idmap: IdMap | None,
    *,
    progress: Callable[[int, int], None] | None = None,
    max_members: int = 2_000_000,
    max_bytes: int | None = None,
    skip_devices: bool = False,
    exclude: Iterable[str] = (),
) -> ExtractStats:
    """Extract a rootfs tarball into the new directory target, shifting ownership by idmap.

    progress(done, total) gets the archive bytes read so far and the archive's size.
    ``skip_devices`` leaves every device node out (an unprivileged container cannot have
    them; a privileged backup restored unprivileged has some); ``exclude`` names paths
    (``etc/vzdump``) left out with everything below them.
    Raises UnsafeArchive for a dangerous member or a limit, ValidationError for a
    corrupt or unknown archive, EngineError for host failures; target then does not exist.
    """
    archive, target = Path(archive), Path(target)
    try:
        raw = open(archive, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as err:
        raise NotFound(f"archive {archive}: {err.strerror}") from err
    with raw:
        data, _ = _decoder(archive, raw, prefetch=True, tap=None)
        reader = cast(_Prefetch, data)
        total, current = os.fstat(raw.fileno()).st_size, ""
        try:
            with _staging(target) as tmp:
                excluded = tuple(tuple(_split(x)) for x in exclude)
                w = _Writer(tmp, idmap, str(archive), "member", max_bytes, skip_devices, excluded)
                tar = TarStream(data.read, CHUNK)
                try:
                    while (m := tar.next()) is not None:
                        current = m.name
                        if w.stats.members >= max_members:
                            raise UnsafeArchive(f"{archive}: archive has more than {max_members} members")
                        e = _stream_entry(m)
                        if not e.kind:
                            raise w.fail(e, f"unsupported member type {bytes([m.type])!r}")
                        w.add(e, tar.data(m, CHUNK) if e.kind == "f" else None)
                        if progress is not None:
                            progress(reader.consumed, total)
                    if not tar.end_seen:
                        raise tarfile.ReadError("no end-of-archive marker")
                    for _ in range(16):  # read on to the stream's end, so its final checksum is checked
                        if not data.read(CHUNK):
                            break
                    w.finish()
                    if progress is not None:
                        progress(total, total)
                except tarfile.TarError as err:
                    where = f" at member '{current}'" if current else ""
                    raise ValidationError(f"{archive}: corrupt or truncated archive{where}: {err}") from err
                finally:
                    w.close()
        finally:
            reader.close()
    return w.stats


_STREAM_KINDS = {ord(t): k for t, k in (("0", "f"), ("\0", "f"), ("7", "f"), ("S", "f"), ("5", "d"), ("2", "l"))}
_STREAM_KINDS.update({ord(t): k for t, k in (("1", "h"), ("3", "c"), ("4", "b"), ("6", "p"))})


def _stream_entry(m: Member) -> _Entry:
    """The entry of a :class:`TarStream` member: what ``_member_entry`` makes of tarfile's."""
    kind = _STREAM_KINDS.get(m.type, "")
    rdev = os.makedev(m.devmajor, m.devminor) if kind in ("c", "b") else 0
    return _Entry(m.name, kind, m.mode & 0o7777, m.uid, m.gid, m.mtime_ns, m.linkname, rdev, m.xattrs or None)


def _read_xattrs(where: int | str) -> dict[str, bytes]:
    """All xattrs of an fd, or of a path without following its last component."""
    kw = {} if isinstance(where, int) else {"follow_symlinks": False}
    try:
        return {n: os.getxattr(where, n, **kw) for n in os.listxattr(where, **kw)}
    except OSError as err:
        if err.errno == errno.EOPNOTSUPP:
            return {}
        raise


def copy_tree(src: Path, target: Path, idmap: IdMap | None, *, src_idmap: IdMap | None = None) -> ExtractStats:
    """Copy a template directory into the new directory target, re-shifting ownership.

    src's ids are host ids (src_idmap None) or those of a tree shifted by src_idmap;
    they land in target shifted by idmap. Same rules and guarantees as extract_archive.
    """
    src, target = Path(src), Path(target)
    if target.resolve().is_relative_to(src.resolve()):
        raise ValidationError(f"cannot copy {src} into itself ({target})")
    try:
        sfd = os.open(src, _DIR & ~os.O_NOFOLLOW)  # src itself may be a symlink; nothing below it
    except OSError as err:
        raise NotFound(f"template directory {src}: {err.strerror}") from err
    try:
        with _staging(target) as tmp:
            w = _Writer(tmp, idmap, str(src), "path", None)
            try:
                _copy_into(sfd, w, src_idmap)
                w.finish()
            except OSError as err:
                raise EngineError(f"{src}: {err}") from err
            finally:
                w.close()
    finally:
        os.close(sfd)
    return w.stats


def _copy_into(sfd: int, w: _Writer, src_idmap: IdMap | None) -> None:
    """Walk src depth-first, one fd open per level, and feed each entry to w."""
    first: dict[tuple[int, int], str] = {}  # (dev, ino) -> first path, to keep hard links

    def entry(name: str, st: os.stat_result, kind: str, where: int | str) -> _Entry:
        e = _Entry(
            name,
            kind,
            stat.S_IMODE(st.st_mode),
            st.st_uid,
            st.st_gid,
            st.st_mtime_ns,
            rdev=st.st_rdev,
            xattrs=_read_xattrs(where),
        )
        caps = e.xattrs.get(_CAPS, b"")  # type: ignore[union-attr]
        if src_idmap is not None:  # back to container ids; w shifts them to idmap
            try:
                e.uid, e.gid = src_idmap.container_uid(e.uid), src_idmap.container_gid(e.gid)
                if caps[3:4] == b"\x03":  # v3: its root id is a host id too
                    e.xattrs[_CAPS] = remap_file_caps(caps, src_idmap.container_uid)  # type: ignore[index]
            except ValidationError as err:
                raise w.fail(e, str(err)) from None
        return e

    w.add(entry(".", os.fstat(sfd), "d", sfd))
    stack = [("", os.dup(sfd), iter(sorted(os.listdir(sfd))))]
    try:
        while stack:
            prefix, dfd, names = stack[-1]
            name = next(names, None)
            if name is None:
                os.close(stack.pop()[1])
                continue
            rel, st = prefix + name, os.stat(name, dir_fd=dfd, follow_symlinks=False)
            kind, inode = _KINDS.get(stat.S_IFMT(st.st_mode)), (st.st_dev, st.st_ino)
            if kind is None:  # a socket: a runtime leftover, meaningless in a copy
                w.stats.members += 1
                w.stats.devices_skipped += 1
            elif kind != "d" and st.st_nlink > 1 and inode in first:
                w.add(_Entry(rel, "h", link=first[inode]))
            elif kind in ("d", "f"):
                flags = _DIR if kind == "d" else os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
                fd = os.open(name, flags, dir_fd=dfd)
                try:
                    st = os.fstat(fd)
                    if _KINDS.get(stat.S_IFMT(st.st_mode)) != kind:
                        raise EngineError(f"{w.source}: path '{rel}' changed during the copy")
                    if kind == "d":
                        w.add(entry(rel, st, kind, fd))
                        stack.append((rel + "/", fd, iter(sorted(os.listdir(fd)))))
                        fd = -1  # now the stack's
                    else:
                        with open(fd, "rb", buffering=0, closefd=False) as data:
                            w.add(entry(rel, st, kind, fd), data)
                finally:
                    if fd >= 0:
                        os.close(fd)
            else:
                e = entry(rel, st, kind, f"/proc/self/fd/{dfd}/{name}")
                e.link = os.readlink(name, dir_fd=dfd) if kind == "l" else ""
                w.add(e)
            if kind not in (None, "d") and st.st_nlink > 1:
                first.setdefault(inode, rel)
    finally:
        for _, dfd, _ in stack:
            os.close(dfd)
