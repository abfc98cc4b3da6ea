"""What every builder (and the custom-template packer) shares: the archive writer and the build directory.

Archive conventions, and why:

* members are ``.``, ``./bin``, ``./bin/busybox``... in depth-first order
  with sorted names, so that a build is reproducible and a parent directory
  always comes before what it holds;
* owners are numeric only (empty user and group names): the names on the
  build host mean nothing inside the container, and an extractor that
  prefers names would pick the host's IDs;
* extended attributes other than SELinux labels (file capabilities, ACLs)
  are kept as ``SCHILY.xattr.*`` PAX records, the form GNU tar reads;
* the file appears under its final name only when complete (temporary file,
  fsync, rename), so a crash or a failed build never leaves a half template.

zstd is written with the ``zstandard`` module rather than by piping through
the ``zstd`` binary: the bytes then depend only on the pinned module, not on
whichever zstd the host has, and there is no child process to manage.

The builder modules import this one, never the package, so that
``engine.builders`` can import them without a cycle.
"""

from __future__ import annotations

import io
import os
import platform
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import cache
from pathlib import Path
from typing import BinaryIO

import zstandard

from engine.errors import Cancelled, EngineError

TEMPLATE_SUFFIX = ".tar.zst"

# progress(step_done, steps_total, text); step_done may be fractional within a step.
Progress = Callable[[float, int, str], None]


def check_cancel(cancel: threading.Event | None, what: str = "build") -> None:
    """Raise :class:`Cancelled` if ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"{what} cancelled; nothing was kept")


# Debian architecture names for ``uname -m``, used when dpkg is absent.
_MACHINE_TO_DEBIAN = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "armhf",
    "i686": "i386",
    "i386": "i386",
    "ppc64le": "ppc64el",
    "riscv64": "riscv64",
    "s390x": "s390x",
}

# Attributes that describe the build host rather than the rootfs.
_SKIPPED_XATTR_PREFIXES = ("security.selinux",)


@cache
def debian_arch() -> str:
    """The host's architecture as Debian (and so Proxmox's template names) spell it."""
    dpkg = shutil.which("dpkg")
    if dpkg:
        result = subprocess.run([dpkg, "--print-architecture"], capture_output=True, text=True, check=False)
        if result.returncode == 0 and result.stdout.strip():
            return result.stdout.strip()
    machine = platform.machine()
    return _MACHINE_TO_DEBIAN.get(machine, machine)


def default_template_dir() -> Path:
    """The template store's cache directory: ``$CAISSON_ROOT/template/cache``."""
    return Path(os.environ.get("CAISSON_ROOT", "/var/lib/caisson")) / "template" / "cache"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Write ``path`` through a hidden temporary file renamed into place on success.

    The temporary name starts with a dot and does not end in ``.tar.zst``, so
    a template listing never shows a file that is still being written; on any
    error (or interrupt) the temporary file is removed.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fileobj:
            yield fileobj
            fileobj.flush()
            os.fsync(fileobj.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


@contextmanager
def zstd_tar(fileobj: BinaryIO, level: int = 10, threads: int = 0) -> Iterator[tarfile.TarFile]:
    """A streaming PAX tar writer whose output goes through zstd into ``fileobj``.

    ``threads=0`` compresses in this thread, which keeps the output
    byte-identical from one build to the next; big rootfs builds may ask for
    more (``-1`` means one per CPU).
    """
    compressor = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
    # "w|": a pure stream, the tar module never seeks in its output.
    with (
        compressor.stream_writer(fileobj, closefd=False) as writer,
        tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar,
    ):
        yield tar


def _xattr_headers(path: str) -> dict[str, str]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:  # a filesystem without xattr support has none to keep
        return {}
    headers = {}
    for name in sorted(names):
        if name.startswith(_SKIPPED_XATTR_PREFIXES):
            continue
        value = os.getxattr(path, name, follow_symlinks=False)
        # tarfile turns surrogate-escaped values into a binary PAX record.
        headers[f"SCHILY.xattr.{name}"] = value.decode("utf-8", "surrogateescape")
    return headers


def add_tree(
    tar: tarfile.TarFile, root: Path, transform: Callable[[tarfile.TarInfo], tarfile.TarInfo | None] | None = None
) -> int:
    """Add the directory ``root`` as ``.`` and everything below it; return the member count.

    Hard links become tar hard links, sockets are skipped (they cannot be
    archived and mean nothing once the writer is gone), and a mount point
    anywhere below ``root`` is an error: its contents are not the rootfs's.
    ``transform`` may rewrite a member (owner, xattrs), drop it (None), or empty
    a regular file (size 0): custom templates use it to clear a container's identity.
    """
    if mounts_under(root):
        raise EngineError(f"refusing to archive {root}: something is mounted below it")
    root_dev = os.lstat(root).st_dev
    count = 0

    def visit(path: str, arcname: str) -> None:
        nonlocal count
        st = os.lstat(path)
        if st.st_dev != root_dev:
            raise EngineError(f"refusing to archive {path}: it is on another filesystem (a mount?)")
        info = _tarinfo(tar, path, arcname, st)
        if info is None:  # socket
            return
        info.pax_headers.update(_xattr_headers(path))
        if transform is not None:
            info = transform(info)
            if info is None:
                return
        if info.isreg() and info.size:
            with open(path, "rb") as fileobj:
                tar.addfile(info, fileobj)
        else:
            tar.addfile(info, io.BytesIO() if info.isreg() else None)
        count += 1
        if info.isdir():
            for name in sorted(os.listdir(path)):
                visit(os.path.join(path, name), f"{arcname}/{name}")

    visit(os.fspath(root), ".")
    return count


def _tarinfo(tar: tarfile.TarFile, path: str, arcname: str, st: os.stat_result) -> tarfile.TarInfo | None:
    """A member for ``path`` from its lstat, as ``TarFile.gettarinfo`` makes one but with numeric owners
    only: no user or group name is looked up per file (the names on this host mean nothing in the
    archive).  A second name of a regular file becomes a hard link to its first; a socket gives None."""
    mode = st.st_mode
    info = tarfile.TarInfo(arcname)
    if stat.S_ISREG(mode):
        inode = (st.st_ino, st.st_dev)
        if st.st_nlink > 1 and inode in tar.inodes and arcname != tar.inodes[inode]:
            info.type, info.linkname = tarfile.LNKTYPE, tar.inodes[inode]
        else:
            info.type, info.size = tarfile.REGTYPE, st.st_size
            if inode[0]:
                tar.inodes[inode] = arcname
    elif stat.S_ISDIR(mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif stat.S_ISFIFO(mode):
        info.type = tarfile.FIFOTYPE
    else:
        return None
    info.mode, info.uid, info.gid, info.mtime = stat.S_IMODE(mode), st.st_uid, st.st_gid, int(st.st_mtime)
    info.uname = info.gname = ""
    return info


def _decode_mountinfo(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this mount namespace, deepest first."""
    base = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fileobj:
        for line in fileobj:
            point = _decode_mountinfo(line.split()[4])
            if point == base or point.startswith(base.rstrip("/") + "/"):
                found.append(point)
    return sorted(set(found), key=lambda p: (p.count("/"), p), reverse=True)


def unmount_under(path: Path) -> None:
    """Detach every mount at or below ``path`` (deepest first).

    A build tool killed half way (debootstrap binds the host's /dev nodes
    into its target when it runs inside a container) can leave mounts
    behind, and deleting the build directory with them in place would
    delete the host's files.
    """
    for point in mounts_under(path):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)


def remove_build_dir(path: Path) -> None:
    """Remove a build directory, but only once nothing is mounted inside it."""
    if not path.exists():
        return
    unmount_under(path)
    left = mounts_under(path)
    if left:
        raise EngineError(f"cannot remove {path}: still mounted there: {', '.join(left)}")
    shutil.rmtree(path)


def existing_templates(dest_dir: Path, pattern: str) -> list[Path]:
    """Templates in ``dest_dir`` matching a glob ``pattern``, oldest version first."""
    if not dest_dir.is_dir():
        return []
    return sorted(dest_dir.glob(pattern), key=lambda p: _version_key(p.name))


def _version_key(name: str) -> list[tuple[int, int | str]]:
    # Numbers compare as numbers, so 12.10 sorts after 12.9.
    key: list[tuple[int, int | str]] = []
    for part in name.replace("-", ".").replace("_", ".").split("."):
        key.append((0, int(part)) if part.isdigit() else (1, part))
    return key
