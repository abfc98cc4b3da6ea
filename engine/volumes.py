"""A container's volumes: its rootfs and ``mpN`` mount points, and how they are mounted at start.

``mpN`` takes a volume on a storage (``mp0: local-btrfs:4,mp=/data`` asks for
a new 4 GiB volume; the engine writes back its name) or a host directory
(``mp0: /srv/shared,mp=/data``, a bind mount; giving one is for
administrators only: the web tier decides who may).  Mount paths are
absolute, without ``..``, never ``/`` nor over ``/proc``, ``/sys`` or ``/dev``.

At start a host-root helper joins the new container's mount namespace before
its init runs and mounts there: the rootfs first when its driver needs a mount
(an image or an overlay), then each mount point, its target resolved inside
the rootfs by fd one component at a time without following symlinks
(:func:`engine.rootfs.open_beneath`), as the container's root would.  The
host's mount table never sees any of it.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from engine import syscalls as sc
from engine.config import ConfigSection, check_mount_path
from engine.errors import ValidationError
from engine.storage.base import Activation, Driver

DISK_KEYS = ["rootfs"] + [f"mp{i}" for i in range(256)]
FORBIDDEN_HOST_PATHS = ("/", "/proc", "/sys", "/dev", "/boot", "/etc", "/run")


@dataclass
class Volume:
    key: str  # "rootfs" or "mpN"
    volid: str  # "<storage>:<ID>/<file>", or a host path for a bind mount
    props: dict

    @property
    def is_bind(self) -> bool:
        return self.volid.startswith("/")


def volumes_of(section: ConfigSection, storage_only: bool = False) -> list[Volume]:
    found = []
    for key in DISK_KEYS:
        if key in section.values:
            props = section.get(key)
            volume = Volume(key, str(props["volume"]), props)
            if not (storage_only and volume.is_bind):
                found.append(volume)
    return found


def disk_number(volid: str) -> int | None:
    name = volid.rpartition("/")[2]
    marker = "-disk-"
    if marker not in name:
        return None
    digits = name.split(marker, 1)[1].split(".", 1)[0]
    return int(digits) if digits.isdigit() else None


def format_size(size: int) -> str:
    """Bytes as Proxmox writes sizes in configs: ``8G``, ``512M``, ``1536K``."""
    for unit, factor in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size / (1 << 10):.0f}K"


def render_props(volid: str, props: dict) -> str:
    parts = [volid]
    for key, value in props.items():
        if key == "volume":
            continue
        if key == "size":
            value = format_size(int(value))
        elif isinstance(value, bool):
            value = int(value)
        parts.append(f"{key}={value}")
    return ",".join(parts)


def check_bind_source(path: str, key: str, state_root: Path) -> str:
    """A host directory to bind: it exists, no symlink on the way, not a system tree nor the engine's state."""
    real = os.path.realpath(path)
    if real != os.path.normpath(path):
        raise ValidationError(f"{key}: host path '{path}' goes through a symlink (it resolves to '{real}')", key=key)
    if real in FORBIDDEN_HOST_PATHS or any(real.startswith(p + "/") for p in ("/proc", "/sys", "/dev")):
        raise ValidationError(f"{key}: host path '{path}' may not be bound into a container", key=key)
    root = os.path.realpath(state_root)
    if real == root or real.startswith(root + "/") or root.startswith(real + "/"):
        raise ValidationError(f"{key}: host path '{path}' overlaps the engine's state directory {root}", key=key)
    try:
        st = os.lstat(real)
    except FileNotFoundError:
        raise ValidationError(f"{key}: host path '{path}' does not exist", key=key) from None
    if not stat.S_ISDIR(st.st_mode):
        raise ValidationError(f"{key}: host path '{path}' is not a directory", key=key)
    return real


@dataclass
class MountPlan:
    """What the start helper mounts, computed before the container's processes exist."""

    rootfs: str
    rootfs_mount: Activation | None
    mounts: list[tuple[str, Activation, bool]]  # (path inside, what, read-only)
    owner: tuple[int, int]

    def release(self) -> None:
        for activation in [self.rootfs_mount, *(m[1] for m in self.mounts)]:
            if activation is not None:
                activation.close()


def mount_activation(driver: Driver, vol: str) -> Activation:
    """A volume as a mount: its driver's (image, overlay) or a bind of its directory."""
    activation = driver.activate(vol)
    if activation is not None:
        return activation
    return Activation(str(driver.rootfs(vol)), None, sc.MS_BIND)


def apply_plan(plan: MountPlan) -> None:
    """In the container's mount namespace, as host root: the rootfs mount, then each mount point."""
    from engine import rootfs as fs
    from engine.storage.mountns import set_fs_ids

    if plan.rootfs_mount is not None:
        _mount(plan.rootfs_mount, plan.rootfs)
    for path, activation, readonly in plan.mounts:
        os.chdir(plan.rootfs)  # on top of the rootfs mount just made
        set_fs_ids(*plan.owner)  # missing directories are made, and the path checked, as container root
        try:
            fd = fs.open_beneath(check_mount_path(path, path).lstrip("/"))
        finally:
            set_fs_ids(0, 0)
        try:
            _mount(activation, f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        if readonly:
            os.chdir(plan.rootfs)
            fd = fs.open_beneath(path.lstrip("/"), create=False)
            try:
                sc.mount(None, f"/proc/self/fd/{fd}", None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY)
            finally:
                os.close(fd)


def _mount(activation: Activation, target: str) -> None:
    if activation.cwd:
        os.chdir(activation.cwd)  # overlay layers are named relative to their storage
    sc.mount(activation.source, target, activation.fstype, activation.flags, activation.data)


def open_inside(root_fd: int, path: str) -> int:
    """An fd of ``path`` below a running container's root fd, refusing every symlink on the way."""
    fd = os.dup(root_fd)
    try:
        for part in [p for p in path.split("/") if p]:
            if part == "..":
                raise ValidationError(f"'{path}' leaves the container's root")
            new = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = new
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_root(pid: int | None) -> int | None:
    """An fd of a running container's root (init's, through /proc), or None for a stopped one."""
    if pid is None:
        return None
    return os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def open_volume(root: int | None, volume: Volume) -> int | None:
    """An fd of where ``volume`` is mounted inside the container whose root fd is ``root`` (None: stopped)."""
    if root is None:
        return None
    if volume.key == "rootfs":
        return os.dup(root)
    return open_inside(root, str(volume.props["mp"]))
