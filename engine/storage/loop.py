"""Raw image volumes: an ext4 file system in one sparse file per volume, loop-mounted at start.

This is what Proxmox does on a ``dir`` storage when a size is given
(``pct create ... --rootfs local:8``): ``local:100/vm-100-disk-0.raw``, a raw
image at ``<path>/images/100/vm-100-disk-0.raw``.  It is not a storage type of
its own: a ``dir`` storage gives a directory without a size (``local:0`` or no
``rootfs``) and an image with one.

The size is enforced (the file system is that big) and grows with ``resize``,
live too (``LOOP_SET_CAPACITY`` and ext4's online resize).

Where the mount happens: in the container's own mount namespace, made at
start by a host-root helper that joins it before init runs
(:func:`engine.storage.mountns.run`), onto the empty directory
``vm-100-disk-0.mnt`` beside the image.  The host's mount table never shows
it; when the container's last process exits the kernel drops the mount and
the loop device (attached with autoclear) with it, so a stop leaves nothing
and a crash of the engine cannot leave anything mounted forever.

Snapshots are copies of the image (``vm-100-disk-0.raw@<name>``, ``cp
--reflink=auto``), taken with the container's file system frozen (FIFREEZE)
while it runs; they are full copies unless the host file system shares
extents.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
from collections.abc import Iterator
from pathlib import Path

from engine.errors import HostError, NotFound, NotSupported, ValidationError
from engine.storage import mountns
from engine.storage.base import Activation, Driver, Fill, Info, copy_tree_reflink, move_tree_up, remove_path, run_tool
from engine.storage.mountns import syncfs

EXT4_IOC_RESIZE_FS = 0x40086610
MIN_SIZE = 16 << 20


class LoopDriver(Driver):
    info = Info(
        "loop",
        snapshots_instant=False,
        linked_clones=False,
        clones_depend_on_snapshot=False,
        size_enforced=True,
        block_backed=True,
        mounted_at_start=True,
        backup_snapshots=True,
    )
    suffix = ".raw"
    prefix = "vm"

    def rootfs(self, vol: str) -> Path:
        return self.path(vol).with_suffix(".mnt")

    def create(
        self, ctid: int, disk: int, owner: int, size: int | None, fill: Fill | None, fill_key: str | None = None
    ) -> str:
        if not size:
            raise ValidationError(f"storage '{self.storage.id}': an image volume needs a size", key="rootfs")
        if size < MIN_SIZE:
            raise ValidationError(
                f"size {size} bytes is below the {MIN_SIZE >> 20} MiB an ext4 image needs", key="rootfs"
            )
        self.owner_dir(ctid, owner)
        vol = self.volname(ctid, disk)
        image, mnt = self.path(vol), self.rootfs(vol)
        if os.path.lexists(image):
            raise HostError(f"{image} already exists")
        staged = image.with_name(f".{image.name}.partial")
        remove_path(staged)
        try:
            with open(staged, "wb") as handle:
                handle.truncate(size)
            run_tool(
                ["mkfs.ext4", "-q", "-F", "-m", "0", "-E", f"root_owner={owner}:{owner}", str(staged)],
                f"making the file system of {image.name}",
            )
            mnt.mkdir(mode=0o755, exist_ok=True)
            os.chown(mnt, owner, owner)
            if fill is not None:
                mountns.run(_fill_image, staged, mnt, fill)
            os.rename(staged, image)
        except BaseException:
            remove_path(staged)
            remove_path(mnt)
            raise
        return vol

    def delete(self, vol: str) -> None:
        image = self.path(vol)
        for snap in image.parent.glob(f"{image.name}@*"):
            snap.unlink()
        image.unlink(missing_ok=True)
        remove_path(self.rootfs(vol))

    def activate(self, vol: str) -> Activation:
        image = self.path(vol)
        if not image.is_file():
            raise NotFound(f"image {image} does not exist")
        fd, device = mountns.attach_loop(image)
        return Activation(device, "ext4", release=lambda: os.close(fd))

    def snapshot(self, vol: str, snap: str, running_root: int | None) -> None:
        target = self.snapshot_path(vol, snap)
        if running_root is None:
            copy_tree_reflink(self.path(vol), target, f"snapshot '{snap}'")
            return
        mountns.freeze_fs(running_root)
        try:
            copy_tree_reflink(self.path(vol), target, f"snapshot '{snap}'")
        finally:
            mountns.thaw_fs(running_root)

    def rollback(self, vol: str, snap: str) -> None:
        source = self.snapshot_path(vol, snap)
        if not source.is_file():
            raise NotFound(f"snapshot '{snap}': {source} does not exist")
        image = self.path(vol)
        staged = image.with_name(f".{image.name}.rollback")
        remove_path(staged)
        copy_tree_reflink(source, staged, f"rollback to '{snap}'")
        os.rename(staged, image)  # a loop device still closing holds the old inode, not the name

    def delete_snapshot(self, vol: str, snap: str) -> None:
        self.snapshot_path(vol, snap).unlink(missing_ok=True)

    def clone(
        self, vol: str, snap: str | None, ctid: int, disk: int, owner: int, linked: bool, size: int | None = None
    ) -> str:
        source = self.snapshot_path(vol, snap) if snap else self.path(vol)
        self.owner_dir(ctid, owner)
        new = self.volname(ctid, disk)
        copy_tree_reflink(source, self.path(new), f"clone to {ctid}")
        mnt = self.rootfs(new)
        mnt.mkdir(mode=0o755, exist_ok=True)
        os.chown(mnt, owner, owner)
        return new

    def held_size(self, vol: str) -> int | None:
        return self.path(vol).stat().st_size

    def resize(self, vol: str, size: int, running_root: int | None) -> None:
        image = self.path(vol)
        old = image.stat().st_size
        if running_root is None:
            os.truncate(image, size)
            try:
                _fsck(image)
                run_tool(["resize2fs", "-f", str(image)], f"growing the file system of {image.name}")
            except BaseException:
                os.truncate(image, old)
                raise
            return
        if not _has_cap_sys_resource():
            raise NotSupported(
                f"growing {image.name} while the container runs needs CAP_SYS_RESOURCE, which "
                "this engine process lacks; stop the container and resize again"
            )
        device = mountns.loop_of(image)
        if device is None:
            raise HostError(f"{image.name} is not attached to a loop device although the container runs")
        os.truncate(image, size)
        mountns.set_capacity(device)
        blocks = size // os.fstatvfs(running_root).f_frsize
        try:
            fcntl.ioctl(running_root, EXT4_IOC_RESIZE_FS, struct.pack("=Q", blocks))
        except OSError as exc:
            os.truncate(image, old)  # the file system still ends where it did
            mountns.set_capacity(device)
            raise HostError(f"online resize of {image.name} failed: {exc.strerror}") from None

    def copy_source(self, vol: str, snap: str | None) -> Path:
        """Mount the image (read-only) on its mount point; call inside a private mount namespace."""
        return self._mount_read_only(vol, self.snapshot_path(vol, snap) if snap else self.path(vol))

    def _mount_read_only(self, vol: str, image: Path) -> Path:
        fd, device = mountns.attach_loop(image, readonly=True)
        try:
            from engine import syscalls as sc

            sc.mount(device, str(self.rootfs(vol)), "ext4", sc.MS_RDONLY, "noload")
        finally:
            os.close(fd)
        return self.rootfs(vol)

    # A backup's snapshot: a copy-on-write clone of the image (FICLONE), taken with the container's
    # file system frozen (FIFREEZE), mounted read-only in a helper's private mount namespace.  Only
    # where the host file system clones files (btrfs, XFS): a full copy would keep the container
    # frozen for as long as it takes, so elsewhere snapshot mode is refused.
    def check_backup_snapshot(self, vol: str) -> None:
        image = self.path(vol)
        probe = image.with_name(f".{image.name}.probe")
        clone = image.with_name(f".{image.name}.probe-clone")
        for leftover in (probe, clone):
            remove_path(leftover)
        try:
            probe.write_bytes(b"")
            ok = mountns.reflink(probe, clone)
        finally:
            for leftover in (probe, clone):
                remove_path(leftover)
        if not ok:
            raise NotSupported(
                f"snapshot mode: storage '{self.storage.id}' keeps raw images on a file system "
                f"that cannot clone files ({self.storage.path}); use --mode suspend (frozen "
                "during the copy) or --mode stop"
            )

    def take_backup_snapshot(self, vol: str, running_root: int | None) -> None:
        image, target = self.path(vol), self.backup_snapshot_path(vol)
        remove_path(target)
        if running_root is not None:
            mountns.freeze_fs(running_root)
        try:
            ok = mountns.reflink(image, target)
        finally:
            if running_root is not None:
                mountns.thaw_fs(running_root)
        if not ok:
            self.check_backup_snapshot(vol)
            raise NotSupported(f"snapshot mode: cannot clone {image.name}")

    @contextlib.contextmanager
    def backup_snapshot_tree(self, vol: str) -> Iterator[Path]:
        target = self.backup_snapshot_path(vol)
        if not target.is_file():
            raise NotFound(f"the backup snapshot {target} does not exist")
        with mountns.holding(self._mount_read_only, vol, target) as root:
            yield root


def _has_cap_sys_resource() -> bool:
    """ext4's online resize asks for CAP_SYS_RESOURCE (some hosts run their agents without it)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << 24))
    return False


def _fsck(image: Path) -> None:
    """resize2fs wants a freshly checked file system; e2fsck's exit 1 means it fixed something."""
    import subprocess

    result = subprocess.run(["e2fsck", "-f", "-p", str(image)], capture_output=True)
    if result.returncode not in (0, 1):
        raise HostError(f"checking {image.name} failed: {result.stdout.decode(errors='replace').strip()}")


def _fill_image(image: Path, mnt: Path, fill: Fill) -> None:
    """In a private mount namespace: mount the new image, make the tree, move it to the file system's root."""
    from engine import syscalls as sc

    fd, device = mountns.attach_loop(image)
    try:
        sc.mount(device, str(mnt), "ext4", 0, None)
    finally:
        os.close(fd)
    staging = mnt / ".caisson-fill"
    fill(staging)
    move_tree_up(staging, mnt)
    fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        syncfs(fd)
    finally:
        os.close(fd)
