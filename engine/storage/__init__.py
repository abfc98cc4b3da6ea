"""The node's storages and the registry of volume drivers.

``DRIVERS`` maps a driver name to its class as ``"module:Class"`` (one module per
backend), imported when a storage of that type is first used (:func:`driver_class`);
``STORAGE_TYPES`` says which drivers a storage type offers: the first for a
volume without a size, the second for one with a size.  A ``dir`` storage
thus gives a directory (``subvol-…``) or, with a size, a raw ext4 image
(``vm-….raw``), as Proxmox's ``dir`` storage does for containers.  With
``layout overlay`` (Caisson's option) its unsized volumes are overlay volumes
instead (``subvol-….overlay``: template layers shared, snapshots and linked
clones of a stopped container made without copying data), and the plain
directories it already holds keep working.

:class:`Storages` reads ``storage.cfg`` (see :mod:`engine.storage.cfg`) and
resolves volume IDs (``<storage>:<ID>/<file>``) to a driver, refusing unknown
storages, disabled ones, storages not available on this node and volumes that
do not belong to the container asking.
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ValidationError
from engine.storage import cfg
from engine.storage.base import Driver, Info, StorageDef, check_snapshot_name

# Resolved on first use: a command that never touches a storage of a type never imports its driver.
DRIVERS: dict[str, str] = {
    "dir": "engine.storage.dir:DirDriver",
    "loop": "engine.storage.loop:LoopDriver",
    "btrfs": "engine.storage.btrfs:BtrfsDriver",
    "overlay": "engine.storage.overlay:OverlayDriver",
}
STORAGE_TYPES: dict[str, tuple[str, str]] = {
    "dir": ("dir", "loop"),
    "btrfs": ("btrfs", "btrfs"),
    "overlay": ("overlay", "overlay"),
}
NEW_VOLUME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9\-_.]*):(\d+(?:\.\d+)?)$")  # Proxmox's "<storage>:<GiB>"

__all__ = [
    "DRIVERS",
    "STORAGE_TYPES",
    "Driver",
    "Info",
    "Storage",
    "StorageDef",
    "Storages",
    "check_snapshot_name",
    "driver_class",
    "status",
]

_driver_classes: dict[str, type[Driver]] = {}


def driver_class(name: str) -> type[Driver]:
    """The driver class registered as ``name`` in :data:`DRIVERS`, its module imported on first use."""
    cls = _driver_classes.get(name)
    if cls is None:
        module, _, attr = DRIVERS[name].partition(":")
        cls = _driver_classes[name] = getattr(importlib.import_module(module), attr)
    return cls


@dataclass
class Storage:
    definition: StorageDef
    plain: Driver
    sized: Driver
    older: tuple[Driver, ...] = ()  # drivers of volumes made before the layout changed

    @property
    def id(self) -> str:
        return self.definition.id

    def drivers(self) -> list[Driver]:
        return [self.plain, *([] if self.plain is self.sized else [self.sized]), *self.older]

    def driver_for(self, vol: str) -> Driver:
        for driver in self.drivers():
            if driver.owns(vol):
                return driver
        raise ValidationError(
            f"volume '{self.id}:{vol}' is not a volume this storage ({self.definition.type}) can hold", key="rootfs"
        )

    @property
    def enforces_size(self) -> bool:
        """Whether a volume given a size here is held to it (the web tier offers a size only then)."""
        return self.sized.info.size_enforced

    def driver_for_new(self, size: int | None, key: str = "rootfs") -> Driver:
        """The driver for a new volume; a size this storage could not enforce is refused, naming it."""
        if size and not self.enforces_size:
            raise ValidationError(
                f"{key}: storage '{self.id}' ({self.definition.type}, {self.sized.info.name} "
                "volumes) cannot enforce a size; give size 0 (no limit) or use a storage that "
                "can (a 'dir' storage's raw images, btrfs)",
                key=key,
            )
        return self.sized if size else self.plain

    def available(self) -> bool:
        return not self.definition.disabled and (not self.definition.nodes or cfg.this_node() in self.definition.nodes)


def make_storage(definition: StorageDef) -> Storage:
    plain_name, sized_name = STORAGE_TYPES[definition.type]
    if definition.type == "dir" and definition.options.get("layout") == "overlay":
        older = (driver_class(plain_name)(definition),)
        plain_name = "overlay"
    else:
        older = ()
    plain = driver_class(plain_name)(definition)
    sized = plain if sized_name == plain_name else driver_class(sized_name)(definition)
    return Storage(definition, plain, sized, older)


def status(root: Path, storage_id: str | None = None) -> list[dict]:
    """Each storage as ``pvesm status`` shows it: type, content, state and space (bytes; None when inactive)."""
    rows = []
    for definition in cfg.load(root).values():
        if storage_id and definition.id != storage_id:
            continue
        storage = make_storage(definition)
        active = definition.path.is_dir() and storage.available()
        row = {
            "id": definition.id,
            "type": definition.type,
            "content": sorted(definition.content),
            "status": "disabled" if definition.disabled else "active" if active else "inactive",
            "enforces_size": storage.enforces_size,
            "total": None,
            "used": None,
            "available": None,
        }
        if definition.path.is_dir():
            st = os.statvfs(definition.path)
            row["total"] = st.f_blocks * st.f_frsize
            row["available"] = st.f_bavail * st.f_frsize
            row["used"] = row["total"] - st.f_bfree * st.f_frsize
        rows.append(row)
    return rows


class Storages:
    """The storages of one node, read from ``<root>/storage.cfg`` on each use (it is small)."""

    def __init__(self, root: Path):
        self.root = root

    def definitions(self) -> dict[str, StorageDef]:
        return cfg.load(self.root)

    def get(self, storage_id: str, content: str | None = None, key: str = "rootfs") -> Storage:
        definitions = self.definitions()
        definition = definitions.get(storage_id)
        if definition is None:
            raise ValidationError(
                f"{key}: storage '{storage_id}' is not defined on this node (known: "
                f"{', '.join(sorted(definitions)) or 'none'})",
                key=key,
            )
        storage = make_storage(definition)
        if content is not None:
            if definition.disabled:
                raise ValidationError(f"{key}: storage '{storage_id}' is disabled", key=key)
            if definition.nodes and cfg.this_node() not in definition.nodes:
                raise ValidationError(
                    f"{key}: storage '{storage_id}' is not available on node '{cfg.this_node()}' "
                    f"(nodes: {', '.join(definition.nodes)})",
                    key=key,
                )
            if content not in definition.content:
                raise ValidationError(
                    f"{key}: storage '{storage_id}' does not hold content type '{content}' "
                    f"(its content: {', '.join(sorted(definition.content)) or 'none'})",
                    key=key,
                )
        return storage

    def resolve(self, volid: str, ctid: int, key: str = "rootfs") -> tuple[Storage, Driver, str]:
        """A container's volume ID as (storage, driver, ``<ID>/<file>``), refusing another container's volume."""
        storage_id, sep, vol = volid.partition(":")
        if not sep:
            raise ValidationError(f"{key}: '{volid}' is not a volume ID (<storage>:<ID>/<file>)", key=key)
        storage = self.get(storage_id, key=key)
        owner, _, leaf = vol.partition("/")
        if owner != str(ctid) or not leaf or "/" in leaf or leaf in (".", "..") or "@" in leaf:
            raise ValidationError(f"{key}: volume '{volid}' does not belong to container {ctid}", key=key)
        driver = storage.driver_for(vol)
        path = driver.path(vol)
        if os.path.commonpath([path, driver.images]) != str(driver.images):
            raise ValidationError(f"{key}: volume '{volid}' points outside storage '{storage_id}'", key=key)
        return storage, driver, vol


def parse_new_volume(value: str, key: str) -> tuple[str, int | None] | None:
    """``<storage>:<size in GiB>`` (Proxmox's way to ask for a new volume) as (storage, bytes); None otherwise.

    A size of 0 asks for a volume without a size (a directory on a ``dir`` storage).
    """
    match = NEW_VOLUME_RE.match(value.strip())
    if not match:
        return None
    gib = float(match.group(2))
    size = int(gib * (1 << 30))
    if gib < 0:
        raise ValidationError(f"{key}: size must not be negative", key=key)
    return match.group(1), size or None
