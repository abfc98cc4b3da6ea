"""The local directory storage: one directory per container volume, Proxmox's ``dir`` layout.

Volume IDs look like ``local:100/subvol-100-disk-0.subvol`` and live at
``<images>/100/subvol-100-disk-0.subvol``.  The per-container directory is
owned by the container's root and closed to every other host user, so no
host user can reach (setuid) files inside a container's rootfs.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from engine.errors import ValidationError


class DirStorage:
    def __init__(self, storage_id: str, images: Path):
        self.id = storage_id
        self.images = images

    def volume_name(self, ctid: int, disk: int = 0) -> str:
        return f"{self.id}:{ctid}/subvol-{ctid}-disk-{disk}.subvol"

    def path(self, volume: str, ctid: int) -> Path:
        """The host path of a volume, refusing anything that is not this container's own directory."""
        storage, _, name = volume.partition(":")
        if storage != self.id:
            raise ValidationError(f"rootfs: storage '{storage}' is not defined on this node (known: {self.id})",
                                  key="rootfs")
        owner, _, leaf = name.partition("/")
        if owner != str(ctid) or not leaf or "/" in leaf or leaf in (".", ".."):
            raise ValidationError(f"rootfs: volume '{volume}' does not belong to container {ctid}", key="rootfs")
        path = self.images / owner / leaf
        if os.path.commonpath([path, self.images]) != str(self.images):
            raise ValidationError(f"rootfs: volume '{volume}' points outside storage '{self.id}'", key="rootfs")
        return path

    def alloc(self, ctid: int, owner: int) -> str:
        """Make the container's directory (not the volume itself: the unpacker creates that atomically)."""
        directory = self.images / str(ctid)
        directory.mkdir(mode=0o700)
        os.chown(directory, owner, owner)
        return self.volume_name(ctid)

    def free(self, ctid: int) -> None:
        directory = self.images / str(ctid)
        if directory.exists():
            shutil.rmtree(directory)
