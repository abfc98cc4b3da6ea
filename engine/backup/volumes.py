"""What the backup package asks of the node's storages, in one place.

The volumes themselves are read through the engine's public API
(``Engine.hold``: the tree of a stopped or frozen volume, snapshots for
``snapshot`` mode); restores replace a container through ``Engine.create``.
What is left here are the checks made before anything changes.
"""

from __future__ import annotations


def check_storage(engine, storage_id: str) -> None:
    """ValidationError naming the storage if the node cannot hold container root disks on it."""
    engine.storages.get(storage_id, content="rootdir", key="storage")


def check_storage_volume(engine, config, key: str) -> None:
    """ValidationError naming the key if its volume is not one of the container's on a storage of this node."""
    engine.storages.resolve(str(config.get(key)["volume"]), config.ctid, key=key)


def block_backed(engine, config, key: str) -> bool:
    """Whether the volume at ``key`` is a file system image (a second mount of it must wait for a freeze)."""
    _, driver, _ = engine.storages.resolve(str(config.get(key)["volume"]), config.ctid, key=key)
    return bool(driver.info.block_backed)
