"""What a container is given on the node, and taken back: volumes, disk numbers, MACs and addresses.

Shared by create, clone, restore, ``set``, ``unlock`` and destroy: mount point
volumes allocated (``mpN: <storage>:<GiB>``), the next free disk number, the
network's MACs and pool addresses chosen against every other container, the
volumes a container owns, and the leftovers of a create, restore or clone a
killed process left behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable

from engine.config import ContainerConfig
from engine.errors import EngineError, InvalidState, ValidationError
from engine.node import CREATE_LOCK, Node, has_network
from engine.reverter import Reverter
from engine.storage import make_storage, parse_new_volume
from engine.volumes import check_bind_source, disk_number, render_props, volumes_of

log = logging.getLogger(__name__)


def allocate_mount_points(
    node: Node,
    ctid: int,
    config: ContainerConfig,
    owner: int,
    revert: Reverter,
    keys: set[str] | None = None,
    used: set[int] | None = None,
    record: Callable[[], None] | None = None,
) -> None:
    """Allocate the volumes ``mpN: <storage>:<GiB>,mp=...`` ask for; check bind mounts' host paths.

    ``used`` holds disk numbers taken besides the config's own (those of a container being replaced);
    ``record()`` is called after each volume is allocated and set in ``config``.
    """
    used = set(used or ()) | disks_in_use(config, storage_only=False)
    for volume in volumes_of(config.current):
        if volume.key == "rootfs" or (keys is not None and volume.key not in keys):
            continue
        if volume.is_bind:
            check_bind_source(volume.volid, volume.key, node.layout.root)
            continue
        new = parse_new_volume(volume.volid, volume.key)
        if new is None:
            node.storages.resolve(volume.volid, ctid, key=volume.key)  # an existing volume: must be ours
            continue
        storage_id, size = new
        driver = node.storages.get(storage_id, content="rootdir", key=volume.key).driver_for_new(size, volume.key)
        disk = free_disk(driver, ctid, used, first=1)
        used.add(disk)
        vol = driver.create(ctid, disk, owner, size, None)
        revert.add(driver.delete, vol)
        props = {k: v for k, v in volume.props.items() if k not in ("volume", "size")}
        config.current.values[volume.key] = render_props(
            f"{storage_id}:{vol}", {**props, "size": size} if size else props
        )
        if record is not None:
            record()


def disks_in_use(config: ContainerConfig, storage_only: bool = True) -> set[int]:
    """The disk numbers of a config's volumes, in every section."""
    used = set()
    for section in [config.current, *config.snapshots.values()]:
        for volume in volumes_of(section, storage_only=storage_only):
            number = disk_number(volume.volid)
            if number is not None:
                used.add(number)
    return used


def free_disk(driver, ctid: int, used: set[int], first: int = 0) -> int:
    """The lowest disk number from ``first`` that no volume of the container uses or left on the storage."""
    disk = first
    while disk in used or os.path.lexists(driver.path(driver.volname(ctid, disk))):
        disk += 1
    return disk


def configure_network(node: Node, ctid: int, config: ContainerConfig) -> None:
    """MACs and pool addresses chosen and every interface checked against the node, before writing."""
    if not has_network(config):
        return
    from engine.network import container as network

    network.configure(node.layout.root, ctid, config, node.other_configs(ctid))


def free_leftovers(node: Node, ctid: int) -> None:
    """Whatever an interrupted create or clone left for an ID without a config, on every storage."""
    if node.exists(ctid):
        return
    for definition in node.storages.definitions().values():
        images = definition.path / "images" / str(ctid)
        if not images.is_dir():
            continue
        storage = make_storage(definition)
        for entry in images.iterdir():
            if entry.name.startswith("."):
                continue
            vol = f"{ctid}/{entry.name.split('@')[0]}"
            for driver in storage.drivers():
                if driver.owns(vol):
                    with contextlib.suppress(EngineError, OSError):
                        driver.delete(vol)
        shutil.rmtree(images, ignore_errors=True)


def clear_interrupted_create(node: Node, ctid: int) -> bool:
    """Under the container's lock: the volumes a ``lock: create`` config names, then the config, then
    whatever else the ID has on the storages.  False if the ID is not in ``lock: create``."""
    path = node.layout.config_path(ctid)
    if not path.exists():
        return False
    config = node.config(ctid)
    if config.current.values.get("lock") != CREATE_LOCK:
        return False
    volids = []
    for volume in volumes_of(config.current, storage_only=True):
        try:
            _, driver, vol = node.storages.resolve(volume.volid, ctid, key=volume.key)
        except ValidationError:
            continue  # not allocated yet (``<storage>:<GiB>``) or not this container's
        with contextlib.suppress(EngineError, OSError):
            driver.delete(vol)
        volids.append(volume.volid)
    log.warning(
        "container %s: a create or restore was interrupted (lock: create); removing what it left: %s and its config",
        ctid,
        ", ".join(volids) if volids else "no volume",
    )
    path.unlink(missing_ok=True)
    free_leftovers(node, ctid)
    return True


def owned_volumes(node: Node, ctid: int, config: ContainerConfig) -> dict:
    """{volume ID: (driver, vol)} of every section; refused while a linked clone stands on a snapshot."""
    volumes = {}
    for name, section in [(None, config.current), *config.snapshots.items()]:
        for volume in volumes_of(section, storage_only=True):
            try:
                _, driver, vol = node.storages.resolve(volume.volid, ctid, key=volume.key)
            except ValidationError:
                continue  # not this container's (a hand-edited config): never destroyed from here
            volumes[volume.volid] = (driver, vol)
            if name is not None:
                clones = driver.linked_clones(vol, name)
                if clones:
                    raise InvalidState(
                        f"container {ctid}'s snapshot '{name}' is the base of linked clone"
                        f"{'s' if len(clones) > 1 else ''} {', '.join(map(str, clones))}; "
                        "destroy those first"
                    )
    return volumes
