"""Device passthrough: ``devN: /dev/…[,uid=,gid=,mode=,deny-write=1]`` (Proxmox's syntax).

A device is passed as Proxmox does it: the engine makes a node of the host
device's kind and numbers in a staging directory of the node
(``<run>/dev/<ID>/devN``), owned by the container's ``uid``/``gid`` (shifted by
its id map) with ``mode`` (default: the host node's), and binds that node at
the same path in the container's ``/dev``.  The container's devices cgroup
allows that major:minor (``rw``, ``r`` with ``deny-write=1``; v1
``devices.allow``, v2 one more BPF device program).  This works alike for
privileged and unprivileged containers: nothing is made by container root.

Added to a running container (``set``) the node is hot-plugged: the rule is
added, then a helper joins the container's mount namespace and moves a clone
of the staged node's mount there (``open_tree``/``move_mount``, Linux 5.2).
Removing one from a running container takes effect at the next start (the
open files inside stay valid, as in Proxmox).

Refused by name: a path that is not a character or block device, and the
host's memory and I/O ports (``/dev/mem``, ``/dev/kmem``, ``/dev/port``),
which no container root may have.  Setting a device is root-equivalent
(``engine.root_settings``), as ``devN`` is ``root@pam``'s alone in Proxmox.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from engine import syscalls as sc
from engine.cgroups.base import DeviceRule
from engine.config import ContainerConfig
from engine.errors import ValidationError
from engine.rootfs import Mount

# mem, kmem, port: the host's physical memory and I/O ports.
FORBIDDEN = {(1, 1), (1, 2), (1, 4)}


@dataclass(frozen=True)
class Device:
    key: str
    path: str  # the host's path, and the container's
    kind: str  # "c" or "b"
    major: int
    minor: int
    uid: int
    gid: int
    mode: int
    deny_write: bool

    @property
    def rule(self) -> DeviceRule:
        return DeviceRule(self.kind, self.major, self.minor, "rm" if self.deny_write else "rwm")


def check(key: str, props: dict) -> Device:
    """A ``devN`` value against the host: the path must be an allowed device node."""
    path = str(props["path"])
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ValidationError(f"{key}: {path} does not exist on this node", key=key) from None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        raise ValidationError(f"{key}: {path} is not a device (a character or block device node)", key=key)
    numbers = (os.major(st.st_rdev), os.minor(st.st_rdev))
    if kind == "c" and numbers in FORBIDDEN:
        raise ValidationError(
            f"{key}: {path} (the host's memory or I/O ports) cannot be passed to a container", key=key
        )
    return Device(
        key,
        path,
        kind,
        *numbers,
        int(props.get("uid", 0)),
        int(props.get("gid", 0)),
        int(props.get("mode", stat.S_IMODE(st.st_mode))),
        bool(props.get("deny-write", False)),
    )


def devices_of(config: ContainerConfig) -> list[Device]:
    values = config.current.values
    keys = sorted((k for k in values if k.startswith("dev") and k[3:].isdigit()), key=lambda k: int(k[3:]))
    return [check(key, config.get(key)) for key in keys]


def stage(run_dir: Path, ctid: int, device: Device, idmap) -> Path:
    """Make the device's node for the container: its kind and numbers, the container's owner and mode."""
    directory = run_dir / "dev" / str(ctid)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    node = directory / device.key
    node.unlink(missing_ok=True)
    kind = stat.S_IFCHR if device.kind == "c" else stat.S_IFBLK
    os.mknod(node, kind | device.mode, os.makedev(device.major, device.minor))
    uid, gid = (idmap.host_uid(device.uid), idmap.host_gid(device.gid)) if idmap else (device.uid, device.gid)
    os.chown(node, uid, gid)
    os.chmod(node, device.mode)
    return node


def start_mounts(run_dir: Path, ctid: int, devices: list[Device], idmap) -> list[Mount]:
    """The start's ``devices`` step: each node staged, then bound in the container's /dev (not nodev)."""
    mounts = []
    for device in devices:
        node = stage(run_dir, ctid, device, idmap)
        mounts.append(Mount(device.path.lstrip("/"), None, str(node), sc.MS_BIND, kind="file", remount=0))
    return mounts


def unstage(run_dir: Path, ctid: int) -> None:
    directory = run_dir / "dev" / str(ctid)
    if directory.is_dir():
        for node in directory.iterdir():
            node.unlink(missing_ok=True)
        directory.rmdir()


# ---- hot-plug ------------------------------------------------------------------------------------
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_EMPTY_PATH = 0x1000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_NODEV = 0x4


def _syscall(number: int, *args) -> int:
    import ctypes

    result = sc.libc.syscall(number, *args)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def hotplug(init_pid: int, node: Path, target: str) -> None:
    """Put the staged ``node`` at ``target`` (``/dev/…``) in a running container's mount namespace.

    Runs in a helper (``engine.storage.mountns.run`` without ``join_pid``: the node must be reached
    before the container's namespace is joined): a detached clone of the node's bind, cleared of
    ``nodev`` (the staging directory's file system may have it), is moved into the container's tree at
    the target, resolved beneath its root without following symlinks.
    """
    import ctypes

    from engine.rootfs import open_beneath

    clone = _syscall(
        SYS_OPEN_TREE, -100, str(node).encode(), ctypes.c_uint(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)
    )  # AT_FDCWD
    try:
        attr = (ctypes.c_uint64 * 4)(0, MOUNT_ATTR_NODEV, 0, 0)  # attr_set, attr_clr, propagation, userns_fd
        _syscall(SYS_MOUNT_SETATTR, clone, b"", ctypes.c_uint(AT_EMPTY_PATH), ctypes.byref(attr), ctypes.c_size_t(32))
        ns = os.open(f"/proc/{init_pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.setns(ns, os.CLONE_NEWNS)
        finally:
            os.close(ns)
        os.chdir("/")
        dest = open_beneath(target.lstrip("/"), "file")
        try:
            _syscall(
                SYS_MOVE_MOUNT,
                clone,
                b"",
                dest,
                b"",
                ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH),
            )
        finally:
            os.close(dest)
    finally:
        os.close(clone)
