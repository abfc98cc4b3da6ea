"""A container held for a long operation (a backup): its lock persisted in the config, what may be done meanwhile.

``Engine.hold(ctid, "backup")`` takes the container's lock for the whole
operation and writes ``lock: backup`` into its config, as Proxmox's vzdump
does: ``status`` shows it, every state change (a start, a snapshot, a
``set`` of mount points) is refused with a message naming it, and it is
cleared when the operation ends, whether it succeeded or failed.  A process
killed in the middle leaves it; ``unlock`` clears it (and removes a backup
snapshot left behind).

Inside, :class:`Held` offers what a backup needs without reaching into the
engine: a clean shutdown and a start that keep the lock, the cgroup freeze,
the readable tree of a volume (mounted privately when it is an image or an
overlay), and snapshots of every volume taken in one short freeze.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from engine.config import ContainerConfig, write_config
from engine.errors import ValidationError
from engine.idmap import IdMap
from engine.node import check_unlocked
from engine.power import shutdown_container, start_container
from engine.state import container_lock
from engine.volumes import Volume, open_root, open_volume, volumes_of


class Held:
    """One container under a persisted lock; made by ``Engine.hold``."""

    def __init__(self, engine, ctid: int, lock: str):
        self.engine, self.ctid, self.lock = engine, ctid, lock

    @property
    def config(self) -> ContainerConfig:
        return self.engine.config(self.ctid)

    @property
    def running(self) -> bool:
        return self.engine.node.running(self.ctid) is not None

    @property
    def idmap(self) -> IdMap | None:
        """The id map the container's files are shifted by (None for a privileged container)."""
        return self.engine.node.idmap_of(self.config)

    # ---- power ---------------------------------------------------------------------------------
    def shutdown(self, timeout: float = 60.0, force_stop: bool = True) -> None:
        """A clean shutdown (a hard stop after ``timeout`` unless ``force_stop`` is off); the lock stays."""
        shutdown_container(self.engine.node, self.ctid, timeout, force_stop)

    def start(self) -> None:
        """Start the container although it is locked by this hold."""
        start_container(self.engine.node, self.ctid, allow_lock=self.lock)

    def freeze(self) -> None:
        self.engine.cgroups.freeze(str(self.ctid))

    def thaw(self) -> None:
        self.engine.cgroups.thaw(str(self.ctid))

    @contextlib.contextmanager
    def suspended(self, keys: Iterable[str] = ("rootfs",)) -> Iterator[None]:
        """The container frozen for the block, the file systems of its image volumes among ``keys`` too
        (so their on-disk state is complete while another mount reads them); thawed whatever happens."""
        from engine.storage import mountns

        record = self.engine.node.running(self.ctid)
        if record is None:
            yield
            return
        frozen_fs: list[int] = []
        self.freeze()
        try:
            root_fd = open_root(record.pid)
            try:
                for volume, driver, _ in self._volumes(keys):
                    if driver.info.block_backed:
                        fd = open_volume(root_fd, volume)
                        frozen_fs.append(fd)
                        mountns.freeze_fs(fd)
            finally:
                os.close(root_fd)
            yield
        finally:
            for fd in reversed(frozen_fs):
                with contextlib.suppress(OSError):
                    mountns.thaw_fs(fd)
                os.close(fd)
            self.thaw()

    # ---- volumes ---------------------------------------------------------------------------------
    def _volumes(self, keys: Iterable[str]) -> list[tuple[Volume, object, str]]:
        wanted = list(keys)
        found = {v.key: v for v in volumes_of(self.config.current, storage_only=True)}
        result = []
        for key in wanted:
            if key not in found:
                raise ValidationError(f"{key}: container {self.ctid} has no storage volume there", key=key)
            volume = found[key]
            _, driver, vol = self.engine.storages.resolve(volume.volid, self.ctid, key=key)
            result.append((volume, driver, vol))
        return result

    @contextlib.contextmanager
    def tree(self, key: str = "rootfs") -> Iterator[Path]:
        """The tree of the volume at ``key`` (``rootfs`` or ``mpN``), readable for the block.

        A directory or subvolume is its own tree; an image or overlay is mounted read-only in a
        helper's private mount namespace.  The container must be stopped or suspended meanwhile.
        """
        [(_, driver, vol)] = self._volumes([key])
        with driver.tree(vol) as root:
            yield root

    def check_snapshots(self, keys: Iterable[str] = ("rootfs",)) -> None:
        """NotSupported naming the storage if a volume among ``keys`` cannot be snapshotted for a backup."""
        for _, driver, vol in self._volumes(keys):
            driver.check_backup_snapshot(vol)

    @contextlib.contextmanager
    def snapshot_trees(self, keys: Iterable[str] = ("rootfs",)) -> Iterator[dict[str, Path]]:
        """Read-only trees of one consistent point of the volumes at ``keys``, for the block.

        The container is frozen only while the snapshots are taken (all in one freeze), then thawed;
        the trees are read while it runs.  The snapshots are removed when the block ends, also when
        it fails.
        """
        volumes = self._volumes(keys)
        for _, driver, vol in volumes:
            driver.check_backup_snapshot(vol)
        record = self.engine.node.running(self.ctid)
        with contextlib.ExitStack() as stack:
            for _, driver, vol in volumes:
                stack.callback(driver.drop_backup_snapshot, vol)
            with self.engine.node.frozen(self.ctid, record is not None):
                root_fd = open_root(record.pid if record else None)
                try:
                    for volume, driver, vol in volumes:
                        fd = open_volume(root_fd, volume)
                        try:
                            driver.take_backup_snapshot(vol, fd)
                        finally:
                            if fd is not None:
                                os.close(fd)
                finally:
                    if root_fd is not None:
                        os.close(root_fd)
            trees = {}
            for volume, driver, vol in volumes:
                trees[volume.key] = stack.enter_context(driver.backup_snapshot_tree(vol))
            yield trees


@contextlib.contextmanager
def hold(engine, ctid: int, lock: str, timeout: float = 10.0) -> Iterator[Held]:
    """Hold the container's lock for the block with ``lock: <lock>`` in its config; see the module's docstring."""
    with container_lock(engine.layout, ctid, timeout=timeout):
        config = engine.config(ctid)
        check_unlocked(config)
        config.current.values["lock"] = lock
        path = engine.layout.config_path(ctid)
        write_config(path, config)
        try:
            yield Held(engine, ctid, lock)
        finally:
            config = engine.config(ctid)
            if config.current.values.get("lock") == lock:
                config.current.values.pop("lock")
                write_config(path, config)


def drop_backup_snapshots(engine, ctid: int, config: ContainerConfig) -> None:
    """Remove the backup snapshots a killed backup left on the container's volumes."""
    for volume in volumes_of(config.current, storage_only=True):
        with contextlib.suppress(Exception):
            _, driver, vol = engine.storages.resolve(volume.volid, ctid, key=volume.key)
            driver.drop_backup_snapshot(vol)
