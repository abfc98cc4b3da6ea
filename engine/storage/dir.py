"""Directory volumes: one directory per container volume, Proxmox's ``dir`` layout.

``local:100/subvol-100-disk-0.subvol`` lives at ``<path>/images/100/subvol-100-disk-0.subvol``,
which is where Caisson has always kept a container's rootfs.  A snapshot is a
full copy beside it (``subvol-100-disk-0.subvol@<name>``) made with
``cp -a --reflink=auto``: on a file system that shares extents (btrfs, XFS) it
costs little, elsewhere it copies every byte; either way it is reported as a
full copy (``snapshots_instant`` is false).  A directory cannot be held to a size: a
``dir`` storage gives a raw image (:mod:`engine.storage.loop`) to a volume with one, and a
resize of a directory volume is refused (``size_enforced`` is false).
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.errors import NotFound, NotSupported
from engine.storage.base import Driver, Fill, Info, copy_tree_reflink, remove_path
from engine.storage.mountns import syncfs


class DirDriver(Driver):
    info = Info(
        "dir",
        snapshots_instant=False,
        linked_clones=False,
        clones_depend_on_snapshot=False,
        size_enforced=False,
        block_backed=False,
        mounted_at_start=False,
    )
    suffix = ".subvol"

    def create(
        self, ctid: int, disk: int, owner: int, size: int | None, fill: Fill | None, fill_key: str | None = None
    ) -> str:
        self.owner_dir(ctid, owner)
        vol = self.volname(ctid, disk)
        target = self.path(vol)
        if fill is not None:
            fill(target)  # makes target atomically (a hidden sibling renamed into place)
        else:
            target.mkdir(mode=0o755)
            os.chown(target, owner, owner)
        return vol

    def delete(self, vol: str) -> None:
        path = self.path(vol)
        for snap in path.parent.glob(f"{path.name}@*"):
            remove_path(snap)
        remove_path(path)

    def rootfs(self, vol: str) -> Path:
        return self.path(vol)

    def snapshot(self, vol: str, snap: str, running_root: int | None) -> None:
        if running_root is not None:
            syncfs(running_root)
        copy_tree_reflink(self.path(vol), self.snapshot_path(vol, snap), f"snapshot '{snap}'")

    def rollback(self, vol: str, snap: str) -> None:
        source = self.snapshot_path(vol, snap)
        if not source.is_dir():
            raise NotFound(f"snapshot '{snap}': {source} does not exist")
        path = self.path(vol)
        staged = path.with_name(f".{path.name}.rollback")
        old = path.with_name(f".{path.name}.old")
        for leftover in (staged, old):
            remove_path(leftover)
        copy_tree_reflink(source, staged, f"rollback to '{snap}'")
        os.rename(path, old)
        os.rename(staged, path)
        remove_path(old)

    def delete_snapshot(self, vol: str, snap: str) -> None:
        remove_path(self.snapshot_path(vol, snap))

    def clone(
        self, vol: str, snap: str | None, ctid: int, disk: int, owner: int, linked: bool, size: int | None = None
    ) -> str:
        source = self.snapshot_path(vol, snap) if snap else self.path(vol)
        self.owner_dir(ctid, owner)
        new = self.volname(ctid, disk)
        copy_tree_reflink(source, self.path(new), f"clone to {ctid}")
        return new

    def resize(self, vol: str, size: int, running_root: int | None) -> None:
        raise NotSupported(f"storage '{self.storage.id}': a directory volume cannot be held to a size")
