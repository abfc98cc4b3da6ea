"""Growing a volume (``pct resize``), and setting the config right after a resize a crash interrupted.

The volume grows first and the config is written after, as Proxmox does: a
kill between the two leaves a grown volume under a config naming the old size.
The resize records what it is doing (:class:`engine.state.Intent`) before it
starts, so recovery (:mod:`engine.recovery`) asks the storage the real size
(``Driver.held_size``) and writes it: the config never names a size the
volume does not have.
"""

from __future__ import annotations

import os

from engine import faults
from engine.config import ContainerConfig, parse_size, write_config
from engine.errors import ValidationError
from engine.node import check_not_template, check_unlocked
from engine.state import Intent, container_lock
from engine.volumes import DISK_KEYS, Volume, open_root, open_volume, render_props, volumes_of


class ResizeOps:
    """Mixed into :class:`engine.lifecycle.Engine`."""

    def resize(self, ctid: int, disk: str, size: str) -> int:
        """Grow ``disk`` (``rootfs`` or ``mpN``) to ``size`` (``4G``) or by it (``+1G``); returns the new bytes."""
        if disk not in DISK_KEYS:
            raise ValidationError(f"resize: '{disk}' is not a disk (rootfs, mp0 … mp255)", key="disk")
        text = str(size).strip()
        grow = text.startswith("+")
        amount = parse_size(text[1:] if grow else text, "size")
        with container_lock(self.layout, ctid):
            config = self.config(ctid)
            check_unlocked(config)
            check_not_template(config, "a resize")
            if disk not in config.current.values:
                raise ValidationError(f"resize: container {ctid} has no {disk}", key="disk")
            volume = next(v for v in volumes_of(config.current) if v.key == disk)
            if volume.is_bind:
                raise ValidationError(f"resize: {disk} is a bind mount of a host directory; it has no size", key=disk)
            storage, driver, vol = self.storages.resolve(volume.volid, ctid, key=disk)
            if not driver.info.size_enforced:
                raise ValidationError(
                    f"resize: {disk} is a volume of storage '{storage.id}' ({driver.info.name}), "
                    "which cannot enforce a size; move it to a storage that can (a 'dir' "
                    "storage's raw images, btrfs) to give it one",
                    key=disk,
                )
            current = int(volume.props.get("size") or 0)
            new = current + amount if grow else amount
            if new < current:
                raise ValidationError(
                    f"resize: {disk} is {current} bytes; shrinking to {new} is not supported (volumes only grow)",
                    key=disk,
                )
            if new == current:
                return current
            # Recorded first: a resize killed after the volume grew and before the config was written
            # leaves the config naming the old size; recovery reads the real one (correct_size).
            intent = Intent(self.layout, ctid)
            intent.write({"op": "resize", "disk": disk})
            try:
                self._grow(ctid, volume, driver, vol, new)
                faults.point("resize:grown")
                _write_size(self.layout, ctid, config, volume, new)
            finally:
                intent.clear()
            return new

    def correct_size(self, ctid: int, disk: str) -> tuple[int, int] | None:
        """After a killed resize of ``disk``: the size its storage holds it to written into the config (an
        image's file system grown to fill it, as the resize would have); (config's, real) if they differed.
        Call with the container's lock free."""
        with container_lock(self.layout, ctid, timeout=0):
            config = self.config(ctid)
            volume = next((v for v in volumes_of(config.current) if v.key == disk and not v.is_bind), None)
            if volume is None:
                return None
            _, driver, vol = self.storages.resolve(volume.volid, ctid, key=disk)
            real = driver.held_size(vol)
            current = int(volume.props.get("size") or 0)
            if real is None or real <= current:
                return None
            self._grow(ctid, volume, driver, vol, real)  # the same size again: finishes a half-grown file system
            _write_size(self.layout, ctid, config, volume, real)
            return current, real

    def _grow(self, ctid: int, volume: Volume, driver, vol: str, size: int) -> None:
        record = self.node.running(ctid)
        root_fd = open_root(record.pid if record else None)
        try:
            fd = open_volume(root_fd, volume)
            try:
                driver.resize(vol, size, fd)
            finally:
                if fd is not None:
                    os.close(fd)
        finally:
            if root_fd is not None:
                os.close(root_fd)


def _write_size(layout, ctid: int, config: ContainerConfig, volume: Volume, size: int) -> None:
    props = dict(volume.props)
    props["size"] = size
    config.current.values[volume.key] = render_props(volume.volid, props)
    write_config(layout.config_path(ctid), config)
