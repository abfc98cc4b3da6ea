"""move-volume: a stopped container's rootfs or mount point copied to another storage, as ``pct move-volume``.

Offline only (as Proxmox's for containers): the container must be stopped,
and ``lock: disk`` is persisted while the data is copied, so an interrupted
move is seen and refused until ``unlock``.  The copy is made by the target
storage's driver (a new volume with the next free disk number, the same
size where one is set, files copied with their owners, which are already
the container's shifted ids), then the config points at it.  The old volume
is kept as ``unusedN`` (Proxmox's default), or removed with ``delete``;
as in Proxmox ``delete`` is refused while a snapshot still uses the volume.
A failed copy removes the new volume and leaves the config as it was.
"""

from __future__ import annotations

from engine.allocation import disks_in_use, free_disk
from engine.config import MAX_UNUSED, write_config
from engine.errors import InvalidState, ValidationError
from engine.node import check_not_template, check_unlocked
from engine.reverter import Reverter
from engine.state import container_lock
from engine.storage.mountns import run as in_private_mount_ns
from engine.volumes import DISK_KEYS, render_props, volumes_of

DISK_LOCK = "disk"


class MoveVolumeOps:
    """Mixed into :class:`engine.lifecycle.Engine`."""

    def move_volume(self, ctid: int, key: str, storage: str, delete: bool = False, digest: str | None = None) -> str:
        """Move the volume at ``key`` (rootfs, mpN) to ``storage``; returns the new volume ID."""
        if key not in DISK_KEYS:
            raise ValidationError(f"move-volume: '{key}' is not a volume key (rootfs, mp0 … mp255)", key="volume")
        target = self.storages.get(storage, content="rootdir", key="storage")
        with container_lock(self.layout, ctid):
            config = self.config(ctid)
            check_unlocked(config)
            check_not_template(config, "moving its volumes")
            if digest and digest != config.digest():
                raise InvalidState(f"container {ctid}'s config was changed by someone else; reload and retry")
            if key not in config.current.values:
                raise ValidationError(f"move-volume: container {ctid} has no {key}", key="volume")
            volume = next(v for v in volumes_of(config.current) if v.key == key)
            if volume.is_bind:
                raise ValidationError(f"move-volume: {key} is a host directory, not a storage volume", key="volume")
            source_storage, driver, vol = self.storages.resolve(volume.volid, ctid, key=key)
            if source_storage.id == storage:
                raise ValidationError(f"move-volume: {key} is on storage '{storage}' already", key="storage")
            in_snapshots = [
                n for n, s in config.snapshots.items() if any(v.volid == volume.volid for v in volumes_of(s))
            ]
            if delete and in_snapshots:
                raise InvalidState(
                    f"move-volume: {volume.volid} is used by snapshot(s) {', '.join(in_snapshots)}; "
                    "it cannot be deleted (move without --delete keeps it as an unused volume)"
                )
            if self.node.running(ctid):
                raise InvalidState(f"container {ctid} is running: move-volume needs it stopped")
            unused = None
            if not delete:
                unused = next(
                    (f"unused{i}" for i in range(MAX_UNUSED) if f"unused{i}" not in config.current.values), None
                )
                if unused is None:
                    raise InvalidState(f"container {ctid} has {MAX_UNUSED} unused volumes; remove some first")
            size = volume.props.get("size")
            size = int(size) if size else None
            target_driver = target.driver_for_new(size, key)
            idmap = self.node.idmap_of(config)
            owner = idmap.host_uid(0) if idmap else 0
            disk = free_disk(target_driver, ctid, disks_in_use(config))
            path = self.layout.config_path(ctid)
            config.current.values["lock"] = DISK_LOCK
            write_config(path, config)
            with Reverter() as revert:
                revert.add(_clear_lock, self, ctid)

                def copy():
                    from engine.unpack import copy_tree

                    source = driver.copy_source(vol, None)
                    return target_driver.create(
                        ctid, disk, owner, size, lambda dest: copy_tree(source, dest, idmap, src_idmap=idmap)
                    )

                new_vol = in_private_mount_ns(copy)
                revert.add(target_driver.delete, new_vol)
                new_volid = f"{storage}:{new_vol}"
                config = self.config(ctid)
                config.current.values[key] = render_props(new_volid, volume.props)
                if unused:
                    config.current.values[unused] = volume.volid
                config.current.values.pop("lock", None)
                write_config(path, config)
                revert.success()
            if delete:
                driver.delete(vol)
            return new_volid


def _clear_lock(engine, ctid: int) -> None:
    config = engine.config(ctid)
    if config.current.values.get("lock") == DISK_LOCK:
        config.current.values.pop("lock")
        write_config(engine.layout.config_path(ctid), config)
