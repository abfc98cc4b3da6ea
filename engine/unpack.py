"""Build a container rootfs from a tarball or a template directory, safely.

``extract_archive`` reads a tarball with the streaming reader of ``engine.tarstream``, decompressed
ahead in a thread (``engine.unpack_decode``); ``copy_tree`` walks a template directory. Both feed
every entry to ``engine.unpack_writer.Writer``, which holds every safety rule (no path out of the
tree, no step through a symlink, hard links only to files made earlier, device nodes, the id map,
size limits) and the staging directory that makes a target complete or absent.
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import cast

from .errors import EngineError, NotFound, UnsafeArchive, ValidationError
from .idmap import IdMap, remap_file_caps
from .tarstream import Member, TarStream
from .unpack_decode import Prefetch, decoder
from .unpack_writer import CAPS, CHUNK, DIR_FLAGS, Entry, ExtractStats, Writer, split_path, staging

_KINDS = {
    stat.S_IFDIR: "d",
    stat.S_IFREG: "f",
    stat.S_IFLNK: "l",
    stat.S_IFCHR: "c",
    stat.S_IFBLK: "b",
    stat.S_IFIFO: "p",
}
_XATTR = "SCHILY.xattr."


def member_entry(m: tarfile.TarInfo) -> Entry:
    """The entry of a ``tarfile`` member (OCI layers read theirs with ``tarfile``)."""
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
    return Entry(
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
        data, _ = decoder(archive, raw, prefetch=True, tap=None)
        reader = cast(Prefetch, data)
        total, current = os.fstat(raw.fileno()).st_size, ""
        try:
            with staging(target) as tmp:
                excluded = tuple(tuple(split_path(x)) for x in exclude)
                w = Writer(tmp, idmap, str(archive), "member", max_bytes, skip_devices, excluded)
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


def _stream_entry(m: Member) -> Entry:
    """The entry of a :class:`TarStream` member: what ``member_entry`` makes of tarfile's."""
    kind = _STREAM_KINDS.get(m.type, "")
    rdev = os.makedev(m.devmajor, m.devminor) if kind in ("c", "b") else 0
    return Entry(m.name, kind, m.mode & 0o7777, m.uid, m.gid, m.mtime_ns, m.linkname, rdev, m.xattrs or None)


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
        sfd = os.open(src, DIR_FLAGS & ~os.O_NOFOLLOW)  # src itself may be a symlink; nothing below it
    except OSError as err:
        raise NotFound(f"template directory {src}: {err.strerror}") from err
    try:
        with staging(target) as tmp:
            w = Writer(tmp, idmap, str(src), "path", None)
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


def _copy_into(sfd: int, w: Writer, src_idmap: IdMap | None) -> None:
    """Walk src depth-first, one fd open per level, and feed each entry to w."""
    first: dict[tuple[int, int], str] = {}  # (dev, ino) -> first path, to keep hard links

    def entry(name: str, st: os.stat_result, kind: str, where: int | str) -> Entry:
        e = Entry(
            name,
            kind,
            stat.S_IMODE(st.st_mode),
            st.st_uid,
            st.st_gid,
            st.st_mtime_ns,
            rdev=st.st_rdev,
            xattrs=_read_xattrs(where),
        )
        caps = e.xattrs.get(CAPS, b"")  # type: ignore[union-attr]
        if src_idmap is not None:  # back to container ids; w shifts them to idmap
            try:
                e.uid, e.gid = src_idmap.container_uid(e.uid), src_idmap.container_gid(e.gid)
                if caps[3:4] == b"\x03":  # v3: its root id is a host id too
                    e.xattrs[CAPS] = remap_file_caps(caps, src_idmap.container_uid)  # type: ignore[index]
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
                w.add(Entry(rel, "h", link=first[inode]))
            elif kind in ("d", "f"):
                flags = DIR_FLAGS if kind == "d" else os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
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
