"""A stopped container's volumes on the host for repair, and the disk tools of ``pct``: mount, unmount,
df, fstrim, fsck.

``mount`` is ``pct mount``: the rootfs and each mount point of a stopped
container are mounted on the host at ``<run>/mount/<ID>/rootfs`` (Proxmox:
``/var/lib/lxc/<ID>/rootfs``), under the persisted lock ``mounted``, which
refuses every other operation (start included) until ``unmount``.  The mount
points are placed as at start: each target resolved inside the rootfs one
component at a time without following symlinks, as the container's root
(:func:`engine.volumes.apply_plan`), so a symlink in the container cannot
make the host mount over its own tree.  The directory is 0700, root's.

``df`` reads each volume's usage (of a running container through its root,
else mounted for the moment under ``mounted``, as ``pct df``); ``fstrim``
discards unused blocks of the image volumes (a ``dir`` or ``btrfs`` volume
is a directory of the host's file system: trimming it would trim the host's,
so it is skipped and named); ``fsck`` checks a stopped container's image
volume (``-a -l`` as Proxmox, ``-f`` with ``force``), refusing other formats.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

from engine import syscalls as sc
from engine.config import write_config
from engine.errors import EngineError, InvalidState, NotSupported, ValidationError
from engine.node import check_unlocked
from engine.state import container_lock
from engine.volumes import DISK_KEYS, MountPlan, Volume, mount_activation, open_inside, open_root, volumes_of

MOUNTED_LOCK = "mounted"
FITRIM = 0xC0185879  # _IOWR('X', 121, struct fstrim_range)


class HostMountOps:
    """Mixed into :class:`engine.lifecycle.Engine`."""

    def mount_path(self, ctid: int) -> Path:
        return self.layout.run / "mount" / str(ctid) / "rootfs"

    def mount(self, ctid: int) -> Path:
        """Mount a stopped container's volumes on the host; ``lock: mounted`` until :meth:`unmount`."""
        with container_lock(self.layout, ctid):
            config = self.config(ctid)
            check_unlocked(config)
            if self.node.running(ctid):
                raise InvalidState(f"container {ctid} is running: mount is for a stopped container's repair")
            config.current.values["lock"] = MOUNTED_LOCK
            write_config(self.layout.config_path(ctid), config)
            try:
                return self._mount_all(ctid, config)
            except BaseException:
                config.current.values.pop("lock", None)
                write_config(self.layout.config_path(ctid), config)
                raise

    def unmount(self, ctid: int) -> None:
        """Unmount what :meth:`mount` made and clear the ``mounted`` lock."""
        with container_lock(self.layout, ctid):
            config = self.config(ctid)
            lock = config.current.values.get("lock")
            if lock != MOUNTED_LOCK:
                raise InvalidState(f"container {ctid} is not mounted (lock: {lock or 'none'})")
            self._umount_all(ctid)
            config.current.values.pop("lock", None)
            write_config(self.layout.config_path(ctid), config)

    def df(self, ctid: int) -> list[dict]:
        """Per volume: key, volume, size, used and available bytes, path inside (``pct df``)."""
        with self._volumes_reachable(ctid) as (config, root):
            rows = []
            for volume in volumes_of(config.current):
                fd = _open_volume_at(root, volume)
                try:
                    st = os.statvfs(fd)
                finally:
                    os.close(fd)
                total, avail = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
                used = total - st.f_bfree * st.f_frsize
                rows.append(
                    {
                        "mp": volume.key,
                        "volume": volume.volid,
                        "size": total,
                        "used": used,
                        "avail": avail,
                        "use_pct": round(100 * used / total, 1) if total else 0.0,
                        "path": "/" if volume.key == "rootfs" else str(volume.props["mp"]),
                    }
                )
            return rows

    def fstrim(self, ctid: int, ignore_mountpoints: bool = False) -> list[dict]:
        """Discard unused blocks of the container's image volumes; the bind and read-only ones are skipped."""
        with self._volumes_reachable(ctid) as (config, root):
            rows = []
            for volume in volumes_of(config.current):
                if volume.key != "rootfs" and (ignore_mountpoints or volume.is_bind or volume.props.get("ro")):
                    continue
                if volume.is_bind or not self.storages.resolve(volume.volid, ctid, key=volume.key)[1].info.block_backed:
                    rows.append({"mp": volume.key, "volume": volume.volid, "trimmed": None, "skipped": "not an image"})
                    continue
                fd = _open_volume_at(root, volume)
                try:
                    rows.append({"mp": volume.key, "volume": volume.volid, "trimmed": _fitrim(fd), "skipped": None})
                finally:
                    os.close(fd)
            return rows

    def fsck(self, ctid: int, device: str = "rootfs", force: bool = False) -> str:
        """fsck of a stopped container's image volume; its output.  Errors left uncorrected raise."""
        if device not in DISK_KEYS:
            raise ValidationError(f"fsck: '{device}' is not a volume key (rootfs, mp0 … mp255)", key="device")
        with container_lock(self.layout, ctid):
            config = self.config(ctid)
            check_unlocked(config)
            if device not in config.current.values:
                raise ValidationError(f"fsck: container {ctid} has no {device}", key="device")
            if self.node.running(ctid):
                raise InvalidState(f"container {ctid} is running: fsck needs it stopped")
            volume = next(v for v in volumes_of(config.current) if v.key == device)
            if volume.is_bind:
                raise ValidationError(f"fsck: {device} is a host directory, not a file system image", key="device")
            storage, driver, vol = self.storages.resolve(volume.volid, ctid, key=device)
            if not driver.info.block_backed:
                raise NotSupported(
                    f"fsck: {device} ({volume.volid}) is a {driver.info.name} volume, not a raw image; "
                    "only image volumes have a file system of their own"
                )
            argv = ["fsck", "-a", "-l", *(["-f"] if force else []), str(driver.path(vol))]
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            output = done.stdout + done.stderr
            if done.returncode >= 4:  # 1: errors corrected, 2: corrected, reboot advised (not for an image)
                raise EngineError(
                    f"fsck of {device} found errors it could not correct (exit {done.returncode}):\n{output}"
                )
            return output

    # ---- shared ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _volumes_reachable(self, ctid: int) -> Iterator[tuple]:
        """(config, root fd) of a running container's root, or of its volumes mounted for the block."""
        with container_lock(self.layout, ctid):
            config = self.config(ctid)
            record = self.node.running(ctid)
            if record:
                root = open_root(record.pid)
                try:
                    yield config, root
                finally:
                    os.close(root)
                return
            target = self.mount_path(ctid)
            if config.current.values.get("lock") == MOUNTED_LOCK and os.path.ismount(target):
                root = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # mounted for repair
                try:
                    yield config, root
                finally:
                    os.close(root)
                return
            check_unlocked(config)
            config.current.values["lock"] = MOUNTED_LOCK
            write_config(self.layout.config_path(ctid), config)
            try:
                target = self._mount_all(ctid, config)
                try:
                    root = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                    try:
                        yield config, root
                    finally:
                        os.close(root)
                finally:
                    self._umount_all(ctid)
            finally:
                config = self.config(ctid)
                config.current.values.pop("lock", None)
                write_config(self.layout.config_path(ctid), config)

    def _mount_all(self, ctid: int, config) -> Path:
        from engine.power import mount_plan
        from engine.storage import mountns
        from engine.volumes import apply_plan

        target = self.mount_path(ctid)
        if target.exists() and os.path.ismount(target):
            raise InvalidState(f"container {ctid}: {target} is already mounted; unmount it first")
        target.parent.parent.mkdir(mode=0o700, exist_ok=True)
        target.parent.mkdir(mode=0o700, exist_ok=True)
        target.mkdir(mode=0o755, exist_ok=True)
        _, driver, vol = self.node.rootfs_volume(config)
        plan = mount_plan(self.node, ctid, config, driver, vol, self.node.idmap_of(config))
        rootfs = plan.rootfs_mount if plan and plan.rootfs_mount else mount_activation(driver, vol)
        host_plan = MountPlan(str(target), rootfs, plan.mounts if plan else [], plan.owner if plan else (0, 0))
        try:
            mountns.run(apply_plan, host_plan, host=True)
        except BaseException:
            self._umount_all(ctid)
            raise
        finally:
            host_plan.release()
        return target

    def _umount_all(self, ctid: int) -> None:
        target = self.mount_path(ctid)
        while os.path.ismount(target):
            sc.umount(str(target), sc.MNT_DETACH)  # the whole tree below goes with it
        with contextlib.suppress(FileNotFoundError, OSError):
            target.rmdir()
            target.parent.rmdir()


def _open_volume_at(root: int, volume: Volume) -> int:
    return os.dup(root) if volume.key == "rootfs" else open_inside(root, str(volume.props["mp"]))


def _fitrim(fd: int) -> int:
    """FITRIM over the whole file system of ``fd``; the bytes the kernel reports trimmed."""
    request = bytearray(struct.pack("QQQ", 0, 2**64 - 1, 0))
    try:
        fcntl.ioctl(fd, FITRIM, request)
    except OSError as exc:
        raise NotSupported(f"fstrim: the file system does not support discard ({exc.strerror})") from None
    return struct.unpack("QQQ", request)[1]
