"""The backup archive: Proxmox's vzdump layout for containers, written and read.

An archive is a PAX tar of the container's root filesystem (members
``./``, ``./etc``...), preceded by its config at ``./etc/vzdump/pct.conf``
and, when the container has firewall rules, ``./etc/vzdump/pct.fw``: the
order vzdump writes, so a restore finds the config in the first member.
Owners are the container's own ids (an unprivileged container's are shifted
back from the host's, file capabilities back to the v2 form), extended
attributes are ``SCHILY.xattr.*`` records, hard links are tar hard links,
device nodes are kept; sockets are skipped. The walk itself is the template
packer's (``engine.builders.add_tree``), so backups and custom templates
archive a tree the same way; compression is zstd (multi-threaded), gzip or
none.
"""

from __future__ import annotations

import contextlib
import fnmatch
import gzip
import io
import os
import tarfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from engine.builders import add_tree
from engine.config import ContainerConfig
from engine.errors import ValidationError
from engine.idmap import IdMap
from engine.templates.custom import _unshift

from .progress import CancelCheck, Progress, check

CHUNK = 1 << 20
CONFIG_MEMBER = "./etc/vzdump/pct.conf"
FIREWALL_MEMBER = "./etc/vzdump/pct.fw"
VZDUMP_DIR = "./etc/vzdump"
# What vzdump always leaves out of a container's archive (temporary files, pid files, lost+found).
DEFAULT_EXCLUDES = ("/tmp/?*", "/var/tmp/?*", "/var/run/?*.pid", "lost+found")
OVERFLOW_ID = 65534  # what a user namespace shows for an id outside its map (nobody / nogroup)


@dataclass
class WriteStats:
    members: int = 0
    bytes: int = 0  # file data archived
    excluded: int = 0
    unmapped: int = 0  # members whose host owner was outside the container's id map
    mountpoints: list[str] = field(default_factory=list)


class Excluder:
    """vzdump's ``--exclude-path``: shell globs; ``/x`` is anchored at the root, ``x`` matches at any depth."""

    def __init__(self, patterns: Iterable[str]):
        self.anchored: list[str] = []
        self.floating: list[str] = []
        for pattern in patterns:
            if not pattern or "\x00" in pattern or "\n" in pattern:
                raise ValidationError(f"exclude-path '{pattern}': must be a non-empty glob", key="exclude-path")
            if pattern.startswith("/"):
                self.anchored.append("." + pattern.rstrip("/"))
            else:
                self.floating.append(pattern.rstrip("/"))

    def __call__(self, name: str) -> bool:
        if any(fnmatch.fnmatchcase(name, p) for p in self.anchored):
            return True
        if self.floating:
            parts = name.split("/")[1:]
            for i in range(len(parts)):
                tail = "/".join(parts[i:])
                if any(fnmatch.fnmatchcase(tail, p) for p in self.floating):
                    return True
        return False


@contextlib.contextmanager
def open_writer(
    fileobj: BinaryIO, compress: str, threads: int = -1, level: int | None = None
) -> Iterator[tarfile.TarFile]:
    """A streaming PAX tar writer into ``fileobj`` through the chosen compressor."""
    with contextlib.ExitStack() as stack:
        if compress == "zstd":
            import zstandard

            compressor = zstandard.ZstdCompressor(
                level=3 if level is None else level, threads=threads, write_checksum=True
            )
            out = stack.enter_context(compressor.stream_writer(fileobj, write_size=CHUNK, closefd=False))
        elif compress == "gzip":
            out = stack.enter_context(
                gzip.GzipFile(fileobj=fileobj, mode="wb", compresslevel=6 if level is None else level)
            )
        elif compress == "none":
            out = fileobj
        else:
            raise ValidationError(f"compression '{compress}' is not one of zstd, gzip, none", key="compress")
        # The plain writer ("w"), not the stream one ("w|"): the latter copies every byte through a buffer
        # of its own, twice; this one hands each chunk read from a file straight to the compressor.
        tar = stack.enter_context(
            tarfile.open(
                fileobj=_Counted(out), mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8", copybufsize=CHUNK
            )
        )
        yield tar


class _Counted:
    """What tarfile's plain writer needs of its file: ``write``, and ``tell`` for the end's padding (a
    compressor or a socket cannot tell; the count of bytes written is the offset in the tar)."""

    def __init__(self, out):
        self.out, self.offset = out, 0

    def write(self, data) -> int:
        self.out.write(data)
        self.offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self.offset


def _text_member(name: str, data: bytes, when: float) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.uname, info.gname = len(data), 0o644, int(when), "", ""
    return info, io.BytesIO(data)


def tree_size(root: Path) -> int:
    """Bytes of file data below ``root`` (for a progress total), not crossing into other filesystems."""
    total, dev = 0, os.lstat(root).st_dev
    stack = [os.fspath(root)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_dev != dev:
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            elif entry.is_file(follow_symlinks=False):
                total += st.st_size
    return total


class _Member:
    """The per-member hook given to ``add_tree``: owners, excludes, hard links, progress, cancel."""

    def __init__(
        self,
        root: Path,
        idmap: IdMap | None,
        excluder: Excluder,
        stats: WriteStats,
        progress: Progress | None,
        total: int,
        cancel: CancelCheck | None,
        prefix: str = ".",
    ):
        self.root, self.idmap, self.excluder, self.stats = root, idmap, excluder, stats
        self.progress, self.total, self.cancel, self.prefix = progress, total, cancel, prefix
        self.link_first: dict[str, str | None] = {}  # a dropped hard-link target -> the copy kept instead
        self.last_report = 0

    def _owners(self, info: tarfile.TarInfo) -> None:
        if self.idmap is None:
            return
        uid, gid = info.uid, info.gid
        try:
            _unshift(info, self.idmap)
        except ValidationError:
            # Owned by a host id outside the map (made from the host): the container sees the overflow id.
            self.stats.unmapped += 1
            info.uid = (
                self.idmap.container_uid(uid)
                if self.idmap.uid_base <= uid < self.idmap.uid_base + self.idmap.count
                else OVERFLOW_ID
            )
            info.gid = (
                self.idmap.container_gid(gid)
                if self.idmap.gid_base <= gid < self.idmap.gid_base + self.idmap.count
                else OVERFLOW_ID
            )

    def __call__(self, info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        check(self.cancel, "backup")
        name = info.name
        if name == VZDUMP_DIR or name.startswith(VZDUMP_DIR + "/") or (name != "." and self.excluder(name)):
            if name != VZDUMP_DIR:
                self.stats.excluded += 1
            if info.isreg() and not info.islnk():
                self.link_first.setdefault(name, None)
            return None
        if info.islnk() and info.linkname in self.link_first:
            kept = self.link_first[info.linkname]
            if kept is None:  # the first name of this file was left out: this one carries the data
                info.type, info.size = tarfile.REGTYPE, os.lstat(self.root / name[2:]).st_size
                self.link_first[info.linkname] = name
                info.linkname = ""
            else:
                info.linkname = kept
        self._owners(info)
        if self.prefix != ".":
            info.name = self.prefix + name[1:]
            if info.islnk():
                info.linkname = self.prefix + info.linkname[1:]
        self.stats.members += 1
        if info.isreg():
            self.stats.bytes += info.size
            if self.progress is not None and self.stats.bytes - self.last_report >= CHUNK:
                self.last_report = self.stats.bytes
                self.progress(min(self.stats.bytes, self.total), self.total)
        return info


def write_archive(
    fileobj: BinaryIO,
    rootfs: Path,
    idmap: IdMap | None,
    config_text: str,
    firewall_text: str | None = None,
    *,
    compress: str = "zstd",
    threads: int = -1,
    level: int | None = None,
    exclude_paths: Iterable[str] = (),
    mountpoints: Iterable[tuple[str, Path]] = (),
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
    default_excludes: bool = True,
) -> WriteStats:
    """Write one container's archive into ``fileobj``; ``mountpoints`` are (path inside, host dir) to include.

    ``default_excludes`` off keeps vzdump's default excludes (``/tmp``...) in: a migration moves everything."""
    excluder = Excluder([*(DEFAULT_EXCLUDES if default_excludes else ()), *exclude_paths])
    mountpoints = list(mountpoints)
    stats = WriteStats()
    total = 0
    if progress is not None:
        total = tree_size(rootfs) + sum(tree_size(host) for _, host in mountpoints)
        progress(0, total)
    now = time.time()
    with open_writer(fileobj, compress, threads, level) as tar:
        tar.addfile(*_text_member(CONFIG_MEMBER, config_text.encode(), now))
        if firewall_text is not None:
            tar.addfile(*_text_member(FIREWALL_MEMBER, firewall_text.encode(), now))
        add_tree(tar, rootfs, _Member(rootfs, idmap, excluder, stats, progress, total, cancel))
        for inside, host in mountpoints:
            stats.mountpoints.append(inside)
            prefix = "./" + inside.strip("/")
            add_tree(tar, host, _Member(host, idmap, Excluder([]), stats, progress, total, cancel, prefix))
        check(cancel, "backup")
    if progress is not None:
        progress(total, total)
    return stats


def config_for_archive(config: ContainerConfig) -> str:
    """The config as the archive carries it: the current section, without a lock or snapshot parent."""
    copy = ContainerConfig(config.ctid)
    copy.current.values = {k: v for k, v in config.current.values.items() if k not in ("lock", "parent")}
    copy.current.raw = list(config.current.raw)
    copy.current.description = config.current.description
    return copy.render()


def open_reader(archive: Path, raw: BinaryIO):
    """A streaming tar reader over any compression the unpacker knows (checked CRCs and cut-offs)."""
    from engine.unpack_decode import open_archive

    return open_archive(archive, raw)


def read_archive_config(archive: Path, ctid: int = 0, *, scan: bool = False) -> tuple[ContainerConfig, str | None, int]:
    """The archive's pct.conf (validated), its pct.fw text if any, and (with ``scan``) how many device
    nodes it holds outside ``/dev``; ValidationError if the config is missing or invalid.

    Without ``scan`` reading stops at the first member after ``./etc/vzdump``: vzdump puts the
    config first. An archive with the config further in is still read to the end.
    """
    archive = Path(archive)
    config_text = firewall_text = None
    devices = 0
    try:
        raw = open(archive, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as err:
        from engine.errors import NotFound

        raise NotFound(f"archive {archive}: {err.strerror}") from err
    with raw:
        tar, _ = open_reader(archive, raw)
        try:
            with tar:
                for member in tar:
                    tar.members.clear()
                    name = member_name(member.name)
                    if name == CONFIG_MEMBER and member.isreg():
                        config_text = _read_text(tar, member, archive)
                    elif name == FIREWALL_MEMBER and member.isreg():
                        firewall_text = _read_text(tar, member, archive)
                    elif (member.ischr() or member.isblk()) and not name.startswith("./dev/"):
                        devices += 1
                    if config_text is not None and not scan and not name.startswith(VZDUMP_DIR):
                        break
        except tarfile.TarError as err:
            raise ValidationError(f"{archive}: corrupt or truncated archive: {err}") from err
    if config_text is None:
        raise ValidationError(
            f"{archive}: no container config ({CONFIG_MEMBER}) in the archive: not a container backup", key="archive"
        )
    config = ContainerConfig.parse(ctid, config_text, origin=f"{archive.name}:{CONFIG_MEMBER}")
    return config, firewall_text, devices


def member_name(name: str) -> str:
    """A member's name in the ``./path`` form vzdump writes, whichever form the archive used."""
    while name.startswith("./"):
        name = name[2:]
    name = name.lstrip("/")
    return "./" + name if name not in ("", ".") else "."


def _read_text(tar: tarfile.TarFile, member: tarfile.TarInfo, archive: Path) -> str:
    if member.size > 1 << 20:
        raise ValidationError(f"{archive}: {member.name} is larger than 1 MiB", key="archive")
    handle = tar.extractfile(member)
    data = handle.read() if handle else b""
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise ValidationError(f"{archive}: {member.name} is not UTF-8 text", key="archive") from None
