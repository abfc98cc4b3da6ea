"""Snapshots, rollback, clones and resize: the volume operations of :class:`engine.lifecycle.Engine`.

Each is two-phase, as in Proxmox: the config is first written with a
persisted ``lock`` (``snapshot``, ``rollback``, ``snapshot-delete``) and, for
a snapshot, its section marked ``snapstate: prepare``/``delete``; the volumes
change; then the final config is written without the lock.  A process killed
in the middle thus leaves a config that says so: every state change refuses
a locked container with a message naming the lock, and ``unlock`` clears it
(dropping a snapshot that never finished, and its partial data).

A snapshot's section holds the config as it was (Proxmox's ``[name]``
sections with ``snaptime``, ``description`` and ``parent``), and rollback
restores it.  A running container is frozen (cgroup freezer) while its
volumes are snapshotted and thawed after, whatever happens; rollback stops a
running container and starts it again.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, replace

from engine import faults, idranges, snapconfig
from engine.allocation import clear_interrupted_create, configure_network, free_leftovers
from engine.config import ConfigSection, ContainerConfig, parse_ctid, write_config
from engine.create_steps import isolate_idmap
from engine.errors import AlreadyExists, EngineError, InvalidState, NotFound, ValidationError
from engine.node import check_not_template, check_unlocked
from engine.power import hard_stop, start_container
from engine.reverter import Reverter
from engine.state import Intent, container_lock
from engine.storage import check_snapshot_name
from engine.storage.mountns import run as in_private_mount_ns
from engine.storage.mountns import syncfs
from engine.volumes import Volume, open_root, open_volume, render_props, volumes_of

LOCK_KEYS = ("lock",)


@dataclass
class SnapshotInfo:
    name: str
    parent: str | None
    snaptime: int | None
    description: str
    state: str | None  # None when complete, else "prepare" or "delete"

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "parent": self.parent,
            "snaptime": self.snaptime,
            "description": self.description,
            "snapstate": self.state,
        }


def _copy_section(section: ConfigSection) -> ConfigSection:
    return ConfigSection(dict(section.values), list(section.raw), section.description)


class SnapshotOps:
    """Mixed into :class:`engine.lifecycle.Engine`; reads through its :class:`engine.node.Node`, stops and
    starts through :mod:`engine.power`."""

    # ---- helpers ------------------------------------------------------------------------------
    def _drivers(self, ctid: int, section: ConfigSection):
        """(volume, driver, vol) for each storage volume of a config section."""
        result = []
        for volume in volumes_of(section, storage_only=True):
            _, driver, vol = self.storages.resolve(volume.volid, ctid, key=volume.key)
            result.append((volume, driver, vol))
        return result

    # ---- snapshot -----------------------------------------------------------------------------
    def snapshot(self, ctid: int, name: str, description: str = "") -> SnapshotInfo:
        check_snapshot_name(name)
        if "\x00" in description:
            raise ValidationError("description: NUL characters are not allowed", key="description")
        with container_lock(self.layout, ctid):
            config = self.config(ctid)
            check_unlocked(config)
            check_not_template(config, "a snapshot")
            if name in config.snapshots:
                raise AlreadyExists(f"snapshot '{name}' of container {ctid} already exists")
            volumes = self._drivers(ctid, config.current)
            for volume, driver, vol in volumes:
                if driver.has_snapshot(vol, name):
                    raise AlreadyExists(
                        f"{volume.key}: storage already holds a snapshot '{name}' of {volume.volid}; "
                        f"remove it or choose another name"
                    )
            original = config.render()
            section = snapconfig.prepare(config, name, description, int(time.time()))
            path = self.layout.config_path(ctid)
            write_config(path, config)
            faults.point("snapshot:prepared")
            with Reverter() as revert:
                revert.add(self._restore_config, ctid, original)
                record = self.node.running(ctid)
                root_fd = open_root(record.pid if record else None)
                try:
                    with self.node.frozen(ctid, record is not None):
                        for volume, driver, vol in volumes:
                            fd = open_volume(root_fd, volume)
                            try:
                                driver.snapshot(vol, name, fd)
                            finally:
                                if fd is not None:
                                    os.close(fd)
                            revert.add(driver.delete_snapshot, vol, name)
                            faults.point("snapshot:frozen")
                finally:
                    if root_fd is not None:
                        os.close(root_fd)
                if record is not None:  # the copies made under freeze reach the disk before the commit
                    for _, driver, vol in volumes:
                        driver.settle_snapshot(vol, name)
                faults.point("snapshot:taken")
                snapconfig.commit(config, name)
                write_config(path, config)
                revert.success()
        return self._snapshot_info(name, section)

    def _restore_config(self, ctid: int, text: str) -> None:
        from engine.config import write_atomic

        write_atomic(self.layout.config_path(ctid), text)

    @staticmethod
    def _snapshot_info(name: str, section: ConfigSection) -> SnapshotInfo:
        snaptime = section.values.get("snaptime")
        return SnapshotInfo(
            name,
            section.values.get("parent"),
            int(snaptime) if snaptime else None,
            section.description,
            section.values.get("snapstate"),
        )

    def list_snapshots(self, ctid: int) -> list[SnapshotInfo]:
        """Every snapshot, oldest first, then ``current`` (whose parent is the snapshot it descends from)."""
        config = self.config(ctid)
        infos = [self._snapshot_info(n, s) for n, s in config.snapshots.items()]
        infos.sort(key=lambda i: (i.snaptime or 0, i.name))
        infos.append(
            SnapshotInfo(
                "current", config.current.values.get("parent"), None, "You are here!", config.current.values.get("lock")
            )
        )
        return infos

    # ---- rollback -----------------------------------------------------------------------------
    def rollback(self, ctid: int, name: str, start: bool | None = None) -> None:
        """Bring volumes and config back to snapshot ``name``; a running container is restarted after."""
        with container_lock(self.layout, ctid, timeout=30.0):
            config = self.config(ctid)
            check_unlocked(config)
            check_not_template(config, "a rollback")
            self._require_snapshot(config, name)
            section = config.snapshots[name]
            if section.values.get("snapstate"):
                raise InvalidState(
                    f"snapshot '{name}' of container {ctid} is incomplete ({section.values['snapstate']}); delete it"
                )
            volumes = self._drivers(ctid, section)
            for volume, driver, vol in volumes:
                if not driver.has_snapshot(vol, name):
                    raise InvalidState(f"{volume.key}: the data of snapshot '{name}' is missing from {volume.volid}")
            was_running = self.node.running(ctid) is not None
            original = config.render()
            path = self.layout.config_path(ctid)
            intent = Intent(self.layout, ctid)
            with Reverter() as revert:
                # what recovery needs to finish this rollback if the process is killed (the lock names no snapshot)
                intent.write({"op": "rollback", "snapshot": name, "running": was_running})
                revert.add(intent.clear)
                if was_running:
                    hard_stop(self.node, ctid)
                    revert.add(start_container, self.node, ctid)
                faults.point("rollback:stopped")
                config.current.values["lock"] = "rollback"
                write_config(path, config)
                revert.add(self._restore_config, ctid, original)
                changed = 0
                try:
                    for _, driver, vol in volumes:
                        driver.rollback(vol, name)
                        changed += 1
                        faults.point("rollback:volume")
                except BaseException:
                    intent.clear()
                    if changed:
                        revert.success()  # data changed: the lock stays to say so
                        raise EngineError(
                            f"rollback of container {ctid} to '{name}' failed after {changed} of "
                            f"{len(volumes)} volumes; the container stays locked (rollback): "
                            f"run the rollback again, or unlock it"
                        ) from None
                    raise
                snapconfig.rollback_apply(config, name)
                write_config(path, config)
                intent.clear()
                revert.success()
            if was_running if start is None else start:
                start_container(self.node, ctid)

    def _require_snapshot(self, config: ContainerConfig, name: str) -> None:
        check_snapshot_name(name)
        if name not in config.snapshots:
            known = ", ".join(config.snapshots) or "none"
            raise NotFound(f"snapshot '{name}' of container {config.ctid} does not exist (snapshots: {known})")

    # ---- delete -------------------------------------------------------------------------------
    def delete_snapshot(self, ctid: int, name: str, force: bool = False) -> None:
        with container_lock(self.layout, ctid):
            config = self.config(ctid)
            if config.current.values.get("lock") and not (
                force and config.current.values["lock"] in ("snapshot", "snapshot-delete")
            ):
                check_unlocked(config)
            self._require_snapshot(config, name)
            section = config.snapshots[name]
            volumes = self._drivers(ctid, section)
            clones = sorted({c for _, driver, vol in volumes for c in driver.linked_clones(vol, name)})
            if clones:
                raise InvalidState(
                    f"snapshot '{name}' of container {ctid} is the base of linked clone"
                    f"{'s' if len(clones) > 1 else ''} {', '.join(map(str, clones))}; "
                    "destroy the clone first (or make full clones)"
                )
            path = self.layout.config_path(ctid)
            section.values["snapstate"] = "delete"
            config.current.values["lock"] = "snapshot-delete"
            write_config(path, config)
            faults.point("delsnapshot:marked")
            for _, driver, vol in volumes:
                driver.delete_snapshot(vol, name)
            snapconfig.finish_delete(config, name, [volume.volid for volume, _, _ in volumes])
            write_config(path, config)

    def unlock(self, ctid: int) -> list[str]:
        """Clear a persisted lock; a snapshot that never finished is removed with its partial data, and so
        is the snapshot a killed backup (``lock: backup``) left.  A container a killed create or restore
        left (``lock: create``) is removed: its volumes, then its config."""
        with container_lock(self.layout, ctid):
            if clear_interrupted_create(self.node, ctid):
                return []
            config = self.config(ctid)
            dropped = []
            if config.current.values.get("lock") == "backup":  # a killed backup may have left its snapshot
                from engine.hold import drop_backup_snapshots

                drop_backup_snapshots(self, ctid, config)
            for name, section in list(config.snapshots.items()):
                if section.values.get("snapstate") == "prepare":
                    for _, driver, vol in self._drivers(ctid, section):
                        driver.delete_snapshot(vol, name)
                    del config.snapshots[name]
                    dropped.append(name)
            for other in [config.current, *config.snapshots.values()]:
                if other.values.get("parent") in dropped:
                    other.values.pop("parent")
            if "parent" not in config.current.values and config.snapshots:
                complete = [n for n, s in config.snapshots.items() if not s.values.get("snapstate")]
                if complete:
                    latest = max(complete, key=lambda n: int(config.snapshots[n].values.get("snaptime", 0)))
                    config.current.values["parent"] = latest
            config.current.values.pop("lock", None)
            write_config(self.layout.config_path(ctid), config)
            return dropped

    # ---- clone --------------------------------------------------------------------------------
    def clone(
        self,
        ctid: int,
        newid: int | str,
        snapshot: str | None = None,
        full: bool = False,
        storage: str | None = None,
        hostname: str | None = None,
    ):
        """A new container from ``ctid`` (its current state or a snapshot).

        Linked (sharing data with the snapshot) when a snapshot is given, the target storage is the
        source's and its driver can; a full copy otherwise, or with ``full``.  The clone of a container
        with an id map of its own (``lxc.idmap``) gets a fresh range and its files shifted into it: while
        copying to another storage, in place (:mod:`engine.idshift`) after a copy or link on the source's
        storage, as LXD shifts a copy.
        """
        newid = parse_ctid(newid)
        if newid == ctid:
            raise ValidationError(f"clone: the new ID must differ from {ctid}", key="newid")
        if storage is not None:
            self.storages.get(storage, content="rootdir", key="storage")
        before = self.config(ctid)  # read again under the locks; an id map decides whether ranges are locked too
        isolated = any(s.raw_values("lxc.idmap") for s in [before.current, *before.snapshots.values()])
        with (
            idranges.node_lock(self.layout.run) if isolated else contextlib.nullcontext(),
            container_lock(self.layout, ctid),
            container_lock(self.layout, newid),
        ):
            config = self.config(ctid)
            check_unlocked(config)
            if self.exists(newid):
                raise AlreadyExists(f"container {newid} already exists")
            if snapshot is not None:
                self._require_snapshot(config, snapshot)
                if config.snapshots[snapshot].values.get("snapstate"):
                    raise InvalidState(f"snapshot '{snapshot}' of container {ctid} is incomplete")
                section = config.snapshots[snapshot]
            else:
                section = config.current
            new = ContainerConfig(newid)
            new.current = _copy_section(section)
            for key in ("lock", "parent", "snaptime", "snapstate", "template"):
                new.current.values.pop(key, None)
            if section is not config.current:
                new.current.description = config.current.description
            new.set("hostname", hostname or _clone_hostname(config.hostname))
            src_idmap = self.node.idmap_of(new)
            if new.unprivileged and new.current.raw_values("lxc.idmap"):
                if not isolated:
                    raise InvalidState(f"container {ctid}'s id map changed while the clone began; try again")
                isolate_idmap(self.node, newid, new, False)  # the source holds its range: a fresh one
            idmap = self.node.idmap_of(new)
            owner = idmap.host_uid(0) if idmap else 0
            record = None if snapshot else self.node.running(ctid)
            with Reverter() as revert:
                free_leftovers(self.node, newid)
                revert.add(free_leftovers, self.node, newid)
                root_fd = open_root(record.pid if record else None)
                try:
                    with self.node.frozen(ctid, record is not None):
                        for volume, driver, vol in self._drivers(ctid, section):
                            if root_fd is not None:
                                fd = open_volume(root_fd, volume)
                                syncfs(fd)
                                os.close(fd)
                            new_volid = self._clone_volume(
                                volume, driver, vol, snapshot, newid, owner, (src_idmap, idmap), full, storage
                            )
                            new.current.values[volume.key] = render_props(new_volid, volume.props)
                            faults.point("clone:volume")
                finally:
                    if root_fd is not None:
                        os.close(root_fd)
                for key in [k for k in new.current.values if k.startswith("net") and k[3:].isdigit()]:
                    from engine.network.nics import parse_nic

                    nic = parse_nic(int(key[3:]), new.current.values[key])
                    new.current.values[key] = replace(nic, hwaddr=None).to_value()  # a new MAC is generated
                configure_network(self.node, newid, new)
                faults.point("clone:network")
                write_config(self.layout.config_path(newid), new)
                revert.success()
        return self.status(newid)

    def _clone_volume(
        self,
        volume: Volume,
        driver,
        vol: str,
        snapshot: str | None,
        newid: int,
        owner: int,
        idmaps: tuple,
        full: bool,
        storage: str | None,
    ) -> str:
        """One volume of a clone; ``idmaps`` are the source's and the clone's maps (the same unless isolated)."""
        src_idmap, idmap = idmaps
        source_storage = volume.volid.partition(":")[0]
        target_id = storage or source_storage
        target = self.storages.get(target_id, content="rootdir", key=volume.key)
        size = volume.props.get("size")
        disk = _disk_index(volume)
        if target_id == source_storage:
            linked = bool(snapshot) and not full and driver.info.linked_clones
            new_vol = driver.clone(vol, snapshot, newid, disk, owner, linked, size)
            if idmap != src_idmap:  # a copy or a link with the source's ids; if this fails it goes with the clone
                from engine.idshift import shift_tree

                with driver.writable_tree(new_vol) as tree:
                    shift_tree(tree, src_idmap, idmap)
            return f"{target_id}:{new_vol}"
        target_driver = target.driver_for_new(size, volume.key)
        from engine.unpack import copy_tree

        def copy(dst_driver=target_driver):
            source = driver.copy_source(vol, snapshot)

            def fill(path):
                copy_tree(source, path, idmap, src_idmap=src_idmap)

            return dst_driver.create(newid, disk, owner, size, fill)

        new_vol = in_private_mount_ns(copy)
        return f"{target_id}:{new_vol}"


def _disk_index(volume: Volume) -> int:
    from engine.volumes import disk_number

    number = disk_number(volume.volid)
    if number is not None:
        return number
    return 0 if volume.key == "rootfs" else int(volume.key[2:]) + 1


def _clone_hostname(hostname: str) -> str:
    name = f"copy-of-{hostname.split('.')[0]}"
    return name[:63].rstrip("-")
