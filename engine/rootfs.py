"""The container's filesystem view, as data: what is mounted where, masked, or made read-only.

The start sequence interprets these lists in one loop each.  Every target is
resolved inside the new root one component at a time without following
symlinks, so a container that replaced ``/proc`` or ``/dev`` with a symlink
cannot make the engine mount over a host path (CVE-2019-19921 and kin).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from engine import syscalls as sc

NOSUID_NODEV_NOEXEC = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC


@dataclass(frozen=True)
class Mount:
    """One mount below the new root (before pivot_root); ``source`` of a bind is a host path."""

    target: str
    fstype: str | None
    source: str | None = None
    flags: int = 0
    data: str | None = None
    kind: str = "dir"  # what the target must be: "dir", or "file" for a bind of a device node
    optional: bool = False  # skip if the kernel refuses (e.g. no cgroup2 on the host)
    remount: int | None = None  # flags of a bind remount after the bind (0: clear the source's nodev etc.)


DEVICES = ["null", "zero", "full", "random", "urandom", "tty"]

# Masked and read-only paths of the OCI default profile (runc, crun) and LXC's proc:mixed.
MASKED_PATHS = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


# The container's own cgroup (its namespace root), writable so systemd can manage its subtree;
# mounted by container root from inside its cgroup namespace, after the others.
CGROUP2_MOUNT = Mount("sys/fs/cgroup", "cgroup2", "cgroup2", NOSUID_NODEV_NOEXEC, optional=True)


def host_mounts(root_uid: int, root_gid: int, rw_sys: bool = False) -> list[Mount]:
    """What host root mounts in the host-owned namespace: inherited by the container's, hence locked.

    /dev is a tmpfs owned by container root (tmpfs reads ``uid=``/``gid=`` as ids of the mounter's
    user namespace: host ids here), nodev: the only devices are the bound nodes, each a mount of its own.
    """
    mounts = [
        Mount("proc", "proc", "proc", NOSUID_NODEV_NOEXEC),
        Mount("sys", "sysfs", "sysfs", NOSUID_NODEV_NOEXEC | (0 if rw_sys else sc.MS_RDONLY)),
        Mount(
            "dev", "tmpfs", "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, f"mode=755,size=65536k,uid={root_uid},gid={root_gid}"
        ),
    ]
    for name in DEVICES:
        mounts.append(Mount(f"dev/{name}", None, f"/dev/{name}", sc.MS_BIND, kind="file"))
    return mounts


# Mounted by container root in its own mount namespace, after the host-built tree is locked: ids in
# their options are the container's own.
CONTAINER_MOUNTS = [
    Mount("dev/pts", "devpts", "devpts", sc.MS_NOSUID | sc.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"),
    Mount("dev/shm", "tmpfs", "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=1777"),
    Mount("dev/mqueue", "mqueue", "mqueue", NOSUID_NODEV_NOEXEC, optional=True),
]


DEV_SYMLINKS = {
    "dev/ptmx": "pts/ptmx",
    "dev/fd": "/proc/self/fd",
    "dev/stdin": "/proc/self/fd/0",
    "dev/stdout": "/proc/self/fd/1",
    "dev/stderr": "/proc/self/fd/2",
    "dev/core": "/proc/kcore",
}


def open_beneath(relpath: str, kind: str = "dir", create: bool = True) -> int:
    """Open ``relpath`` below the current directory as an O_PATH fd, refusing every symlink.

    Missing components are created (directories, or an empty file for the
    last component of a ``file`` target) owned by whoever runs this, i.e.
    container root.
    """
    parts = [p for p in relpath.split("/") if p and p != "."]
    if not parts or ".." in parts:
        raise OSError(errno.EINVAL, f"bad path '{relpath}'")
    fd = os.open(".", os.O_PATH | os.O_DIRECTORY)
    try:
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            want_file = last and kind == "file"
            try:
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                if not create:
                    raise
                if want_file:
                    os.close(os.open(part, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o644, dir_fd=fd))
                else:
                    os.mkdir(part, 0o755, dir_fd=fd)
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                raise OSError(errno.ELOOP, f"'{'/'.join(parts[: index + 1])}' is a symlink in the container's root")
            if want_file and not stat.S_ISREG(st.st_mode) and not stat.S_ISCHR(st.st_mode):
                raise OSError(errno.EINVAL, f"'{relpath}' is not a file")
            if not want_file and not stat.S_ISDIR(st.st_mode):
                raise OSError(errno.ENOTDIR, f"'{'/'.join(parts[: index + 1])}' is not a directory")
            flags = os.O_PATH | os.O_NOFOLLOW | (0 if want_file else os.O_DIRECTORY)
            new_fd = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = new_fd
        return fd
    except BaseException:
        os.close(fd)
        raise


def apply_mount(mount: Mount) -> None:
    """Mount one entry onto its target, resolved beneath the current directory."""
    fd = open_beneath(mount.target, mount.kind)
    try:
        sc.mount(mount.source or mount.fstype, f"/proc/self/fd/{fd}", mount.fstype, mount.flags, mount.data)
        if mount.remount is not None:  # on the new mount: the target opened again, through it
            top = open_beneath(mount.target, mount.kind, create=False)
            try:
                sc.mount(None, f"/proc/self/fd/{top}", None, sc.MS_BIND | sc.MS_REMOUNT | mount.remount)
            finally:
                os.close(top)
    except OSError:
        if not mount.optional:
            raise
    finally:
        os.close(fd)


def make_dev_symlinks() -> None:
    for link, target in DEV_SYMLINKS.items():
        try:
            os.symlink(target, link)
        except FileExistsError:
            pass


def remount_readonly(path: str, extra: int = 0) -> None:
    """Bind a path onto itself and remount it read-only, keeping the flags the kernel has locked."""
    sc.mount(path, path, None, sc.MS_BIND | sc.MS_REC)
    flags = sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | extra
    try:
        sc.mount(None, path, None, flags)
    except PermissionError:
        sc.mount(None, path, None, flags | NOSUID_NODEV_NOEXEC)


def mask_paths(writable_net: bool = False) -> None:
    """After pivot_root: hide sensitive /proc and /sys entries, make others read-only.

    ``writable_net``: /proc/sys/net (scoped by the kernel to the container's network namespace) stays
    writable under the read-only /proc/sys, as LXC's ``proc:mixed`` leaves it.
    """
    for path in MASKED_PATHS:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            sc.mount("tmpfs", path, "tmpfs", sc.MS_RDONLY | NOSUID_NODEV_NOEXEC, "size=0")
        else:
            sc.mount("/dev/null", path, None, sc.MS_BIND)
    for path in READONLY_PATHS:
        if os.path.lexists(path):
            remount_readonly(path, NOSUID_NODEV_NOEXEC)
    if writable_net and os.path.isdir("/proc/sys/net"):
        sc.mount("/proc/sys/net", "/proc/sys/net", None, sc.MS_BIND | sc.MS_REC)
        sc.mount(None, "/proc/sys/net", None, sc.MS_BIND | sc.MS_REMOUNT | NOSUID_NODEV_NOEXEC)
