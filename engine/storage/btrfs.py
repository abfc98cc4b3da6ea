"""Btrfs volumes: one subvolume per container volume, Proxmox's ``btrfs`` storage layout.

``local-btrfs:100/subvol-100-disk-0.subvol`` is the subvolume
``<path>/images/100/subvol-100-disk-0.subvol``; a snapshot is a read-only
subvolume snapshot beside it, ``subvol-100-disk-0.subvol@<name>``, as
Proxmox names them.  Snapshots, rollbacks and clones are subvolume snapshots
(the kernel's ioctls, no data copied); a clone is an independent subvolume
that shares extents with its source, so it does not keep the snapshot it came
from alive, and deleting that snapshot is allowed.

A size becomes a qgroup limit on the subvolume (quotas are enabled on the file
system with the first sized volume).  Writing past it fails inside the
container with EDQUOT ("Disk quota exceeded"), btrfs's word for the volume
being full.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
from collections.abc import Iterator
from pathlib import Path

from engine.errors import HostError, NotFound
from engine.storage.base import Driver, Fill, Info, move_tree_up, run_tool

BTRFS_IOCTL_MAGIC = 0x94
BTRFS_SUBVOL_RDONLY = 1 << 1
BTRFS_SUPER_MAGIC = 0x9123683E


def _iow(nr: int, size: int) -> int:
    return (1 << 30) | (size << 16) | (BTRFS_IOCTL_MAGIC << 8) | nr


BTRFS_IOC_SUBVOL_CREATE = _iow(14, 4096)
BTRFS_IOC_SNAP_DESTROY = _iow(15, 4096)
BTRFS_IOC_SNAP_CREATE_V2 = _iow(23, 4096)


def _vol_args(name: str, fd: int = 0) -> bytes:
    raw = name.encode()
    return struct.pack("=q4088s", fd, raw)


def _vol_args_v2(name: str, fd: int, flags: int) -> bytes:
    return struct.pack("=qQQ32s4040s", fd, 0, flags, b"", name.encode())


def _ioctl_in(directory: Path, request: int, args: bytes, what: str) -> None:
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(dfd, request, bytearray(args), True)
    except OSError as exc:
        raise HostError(f"{what}: {exc.strerror}") from None
    finally:
        os.close(dfd)


def subvolume_create(path: Path) -> None:
    _ioctl_in(path.parent, BTRFS_IOC_SUBVOL_CREATE, _vol_args(path.name), f"creating subvolume {path}")


def subvolume_snapshot(source: Path, target: Path, readonly: bool) -> None:
    sfd = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _ioctl_in(
            target.parent,
            BTRFS_IOC_SNAP_CREATE_V2,
            _vol_args_v2(target.name, sfd, BTRFS_SUBVOL_RDONLY if readonly else 0),
            f"snapshot of {source} as {target}",
        )
    finally:
        os.close(sfd)


def subvolume_delete(path: Path) -> None:
    if not os.path.lexists(path):
        return
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(dfd, BTRFS_IOC_SNAP_DESTROY, bytearray(_vol_args(path.name)), True)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return
        raise HostError(f"deleting subvolume {path}: {exc.strerror}") from None
    finally:
        os.close(dfd)


def is_btrfs(path: Path) -> bool:
    import ctypes

    class StatFs(ctypes.Structure):
        _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 120)]

    buf = StatFs()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.statfs(str(path).encode(), ctypes.byref(buf)) != 0:
        return False
    return buf.f_type & 0xFFFFFFFF == BTRFS_SUPER_MAGIC


class BtrfsDriver(Driver):
    info = Info(
        "btrfs",
        snapshots_instant=True,
        linked_clones=True,
        clones_depend_on_snapshot=False,
        size_enforced=True,
        block_backed=False,
        mounted_at_start=False,
        backup_snapshots=True,
    )
    suffix = ".subvol"

    def _check_fs(self) -> None:
        self.images.mkdir(mode=0o711, parents=True, exist_ok=True)
        if not is_btrfs(self.images):
            raise HostError(f"storage '{self.storage.id}': {self.storage.path} is not on a btrfs file system")

    def create(
        self, ctid: int, disk: int, owner: int, size: int | None, fill: Fill | None, fill_key: str | None = None
    ) -> str:
        self._check_fs()
        self.owner_dir(ctid, owner)
        vol = self.volname(ctid, disk)
        path = self.path(vol)
        if os.path.lexists(path):
            raise HostError(f"{path} already exists")
        staged = path.with_name(f".{path.name}.partial")
        subvolume_delete(staged)
        subvolume_create(staged)
        try:
            if fill is not None:
                fill(staged / ".caisson-fill")
                move_tree_up(staged / ".caisson-fill", staged)
            else:
                os.chown(staged, owner, owner)
                os.chmod(staged, 0o755)
            if size:
                self._limit(staged, size)
            os.rename(staged, path)
        except BaseException:
            subvolume_delete(staged)
            raise
        return vol

    def _limit(self, path: Path, size: int) -> None:
        run_tool(["btrfs", "quota", "enable", str(self.images)], f"storage '{self.storage.id}': enabling quotas")
        run_tool(["btrfs", "qgroup", "limit", str(size), str(path)], f"limiting {path.name} to {size} bytes")

    def _current_limit(self, path: Path) -> int | None:
        try:
            out = run_tool(["btrfs", "qgroup", "show", "-r", "--raw", "-f", str(path)], "reading the qgroup")
        except HostError:
            return None  # quotas not enabled: no limit
        for line in out.splitlines():
            fields = line.split()
            # qgroupid, referenced, exclusive, max referenced (btrfs-progs 6 adds a path column after)
            if len(fields) >= 4 and fields[0].startswith("0/") and fields[3].isdigit():
                return int(fields[3])
        return None

    def delete(self, vol: str) -> None:
        path = self.path(vol)
        for snap in path.parent.glob(f"{path.name}@*"):
            subvolume_delete(snap)
        subvolume_delete(path)

    def rootfs(self, vol: str) -> Path:
        return self.path(vol)

    def snapshot(self, vol: str, snap: str, running_root: int | None) -> None:
        # The ioctl flushes the subvolume's dirty data first: the snapshot holds what was written.
        subvolume_snapshot(self.path(vol), self.snapshot_path(vol, snap), readonly=True)

    def rollback(self, vol: str, snap: str) -> None:
        source = self.snapshot_path(vol, snap)
        if not source.is_dir():
            raise NotFound(f"snapshot '{snap}': {source} does not exist")
        path = self.path(vol)
        limit = self._current_limit(path)
        staged = path.with_name(f".{path.name}.rollback")
        old = path.with_name(f".{path.name}.old")
        subvolume_delete(staged)
        subvolume_delete(old)
        subvolume_snapshot(source, staged, readonly=False)
        try:
            if limit:
                run_tool(["btrfs", "qgroup", "limit", str(limit), str(staged)], f"limiting {path.name}")
        except BaseException:
            subvolume_delete(staged)
            raise
        os.rename(path, old)
        os.rename(staged, path)
        subvolume_delete(old)

    def delete_snapshot(self, vol: str, snap: str) -> None:
        subvolume_delete(self.snapshot_path(vol, snap))

    def clone(
        self, vol: str, snap: str | None, ctid: int, disk: int, owner: int, linked: bool, size: int | None = None
    ) -> str:
        source = self.snapshot_path(vol, snap) if snap else self.path(vol)
        self._check_fs()
        self.owner_dir(ctid, owner)
        new = self.volname(ctid, disk)
        target = self.path(new)
        subvolume_snapshot(source, target, readonly=False)
        try:
            limit = size or self._current_limit(self.path(vol))
            if limit:
                run_tool(["btrfs", "qgroup", "limit", str(limit), str(target)], f"limiting {target.name}")
        except BaseException:
            subvolume_delete(target)
            raise
        return new

    def resize(self, vol: str, size: int, running_root: int | None) -> None:
        self._limit(self.path(vol), size)

    def held_size(self, vol: str) -> int | None:
        return self._current_limit(self.path(vol))

    # A backup's snapshot: a read-only subvolume snapshot beside the volume (``…subvol@.vzdump``).
    def take_backup_snapshot(self, vol: str, running_root: int | None) -> None:
        target = self.backup_snapshot_path(vol)
        subvolume_delete(target)
        subvolume_snapshot(self.path(vol), target, readonly=True)

    @contextlib.contextmanager
    def backup_snapshot_tree(self, vol: str) -> Iterator[Path]:
        target = self.backup_snapshot_path(vol)
        if not target.is_dir():
            raise NotFound(f"the backup snapshot {target} does not exist")
        yield target

    def drop_backup_snapshot(self, vol: str) -> None:
        subvolume_delete(self.backup_snapshot_path(vol))
