"""rescan: a container's volumes found on the storages and recorded, as ``pct rescan``.

A volume of the container's ID on any storage (``images/<ID>/…`` in every
storage's layout) that no section of its config names is added as the next
free ``unusedN``, so it can be re-attached or removed instead of lying
forgotten (a config restored from elsewhere, a move interrupted after its
copy).  The ``size`` of an image volume (the one kind whose size the file
itself tells) is corrected to the image's.  Snapshots, a backup's snapshot
and hidden staging entries are never taken for volumes.  ``dry_run`` reports
without writing.  A container that is locked is left alone and named.
"""

from __future__ import annotations

import contextlib
import os

from engine.config import MAX_UNUSED, write_config
from engine.errors import EngineError
from engine.state import container_lock
from engine.storage import make_storage
from engine.volumes import render_props, volumes_of


def rescan(engine, ctid: int | None = None, dry_run: bool = False) -> list[dict]:
    """Changes made (or, with ``dry_run``, to make): ``{"ctid", "key", "volume", "change"}`` rows."""
    rows = []
    for one in [ctid] if ctid is not None else engine.ids():
        with container_lock(engine.layout, one):
            config = engine.config(one)
            if config.current.values.get("lock"):
                rows.append({"ctid": one, "key": None, "volume": None, "change": "skipped: locked"})
                continue
            found = _changes(engine, one, config)
            rows += found
            if found and not dry_run:
                write_config(engine.layout.config_path(one), config)
    return rows


def _changes(engine, ctid: int, config) -> list[dict]:
    named = {v.volid for s in [config.current, *config.snapshots.values()] for v in volumes_of(s)}
    named |= {str(v) for k, v in config.current.values.items() if k.startswith("unused")}
    rows = []
    for volume in volumes_of(config.current, storage_only=True):
        with contextlib.suppress(EngineError):
            _, driver, vol = engine.storages.resolve(volume.volid, ctid, key=volume.key)
            if driver.info.block_backed and driver.path(vol).is_file():
                size = os.stat(driver.path(vol)).st_size
                if int(volume.props.get("size") or 0) != size:
                    config.current.values[volume.key] = render_props(volume.volid, {**volume.props, "size": size})
                    rows.append({"ctid": ctid, "key": volume.key, "volume": volume.volid, "change": f"size={size}"})
    for storage_id, definition in sorted(engine.storages.definitions().items()):
        images = definition.path / "images" / str(ctid)
        if not images.is_dir():
            continue
        storage = make_storage(definition)
        for entry in sorted(images.iterdir()):
            if entry.name.startswith(".") or "@" in entry.name:
                continue
            vol = f"{ctid}/{entry.name}"
            if not any(driver.owns(vol) for driver in storage.drivers()):
                continue
            volid = f"{storage_id}:{vol}"
            if volid in named:
                continue
            key = next((f"unused{i}" for i in range(MAX_UNUSED) if f"unused{i}" not in config.current.values), None)
            if key is None:
                break
            config.current.values[key] = volid
            named.add(volid)
            rows.append({"ctid": ctid, "key": key, "volume": volid, "change": "added as unused"})
    return rows
