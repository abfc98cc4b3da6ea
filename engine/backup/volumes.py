"""Everything the backup package asks of the node's storages, in one place.

The engine resolves volume IDs through its storage registry
(``Engine.storages``, one driver per volume format); what a backup needs that
the Engine does not offer as a public method yet (the tree of a stopped
container's volume, moving a restored volume to another container ID, a
snapshot for ``snapshot`` mode) is done here through the drivers.
"""
from __future__ import annotations

import os
from pathlib import Path

from engine.errors import NotSupported, ValidationError


def check_storage(engine, storage_id: str) -> None:
    """ValidationError naming the storage if the node cannot hold container root disks on it."""
    engine.storages.get(storage_id, content="rootdir", key="storage")


def volume_tree(engine, volid: str, ctid: int, key: str = "rootfs") -> Path:
    """The host directory holding a volume's files; refused for volumes that must be mounted to be read."""
    storage, driver, vol = engine.storages.resolve(volid, ctid, key=key)
    if driver.info.mounted_at_start:
        raise NotSupported(f"{key}: volume {volid} on storage '{storage.id}' is an image that must be mounted "
                           "to be read; backups of such volumes are not supported yet")
    return driver.rootfs(vol)


def snapshot_source(engine, config):
    """A context manager yielding the root of a snapshot taken for the backup, or NotSupported naming the storage.

    A driver offers this by a ``backup_snapshot(vol)`` context manager; none does yet.
    """
    storage, driver, vol = engine._rootfs_volume(config)
    take = getattr(driver, "backup_snapshot", None)
    if take is None:
        raise NotSupported(f"snapshot mode: storage '{storage.id}' ({storage.definition.type}) cannot take "
                           "snapshots for a backup; use --mode suspend (frozen during the copy) or --mode stop")
    return take(vol)


def move_rootfs(engine, temp_config, ctid: int, old_config) -> tuple[str, Path, Path]:
    """Move the temporary container's root volume beside ``ctid``'s under a disk number of its own.

    Returns the new volume ID, its path and its old path (to move it back on failure).
    """
    storage, driver, vol = engine._rootfs_volume(temp_config)
    _, _, old_vol = engine._rootfs_volume(old_config)
    source = driver.path(vol)
    disk = 0
    while True:
        new_vol = driver.volname(ctid, disk)
        target = driver.path(new_vol)
        if new_vol != old_vol and not os.path.lexists(target) and not list(target.parent.glob(target.name + "@*")):
            break
        disk += 1
    if list(source.parent.glob(source.name + "@*")):
        raise ValidationError(f"restore: the temporary volume {vol} has snapshots; it cannot be moved")
    st = os.stat(source)
    driver.owner_dir(ctid, st.st_uid)
    os.rename(source, target)
    return f"{storage.id}:{new_vol}", target, source


def delete_rootfs(engine, config) -> None:
    _, driver, vol = engine._rootfs_volume(config)
    driver.delete(vol)
