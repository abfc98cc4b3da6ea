"""Changing a container's config: limits applied live, mount points allocated and dropped, the network."""

from __future__ import annotations

import os

from engine import faults
from engine.allocation import allocate_mount_points, configure_network
from engine.cgroups.base import Limits
from engine.config import ContainerConfig, write_config
from engine.errors import InvalidState, ValidationError
from engine.node import CREATE_LOCK, Node, check_not_template, check_unlocked
from engine.reverter import Reverter
from engine.state import container_lock
from engine.volumes import volumes_of

LIVE_KEYS = {"memory", "swap", "cores", "cpulimit", "cpuunits", "pids", "ioweight"}


class ConfigChangeOps:
    """Mixed into :class:`engine.lifecycle.Engine`; allocates through :mod:`engine.allocation`."""

    # ---- configuration ---------------------------------------------------------------------
    def limits(self, config: ContainerConfig) -> Limits:
        return limits_of(config)

    def set(
        self,
        ctid: int,
        changes: dict[str, str] | None = None,
        delete: list[str] | None = None,
        digest: str | None = None,
    ) -> list[str]:
        """Change config keys; limits of a running container change at once.  Returns the keys applied live.

        ``mpN: <storage>:<GiB>,mp=/path`` allocates a volume; deleting an ``mpN`` of a storage volume
        destroys the volume once the new config is written (never one a snapshot still holds).
        """
        with container_lock(self.layout, ctid), Reverter() as revert:
            config = self.config(ctid)
            if config.current.values.get("lock") == CREATE_LOCK:  # half made: only unlock, create or restore
                check_unlocked(config)
            if digest and digest != config.digest():
                raise InvalidState(f"container {ctid}'s config was changed by someone else; reload and retry")
            dropped = []
            for key in delete or []:
                if key == "rootfs":
                    raise ValidationError("rootfs: cannot be deleted", key=key)
                if key in ("lock", "parent", "template"):
                    raise ValidationError(f"{key}: managed by the engine; use 'unlock' for a lock", key=key)
                if key.startswith("mp") and key[2:].isdigit():
                    check_not_template(config, f"removing its mount point {key}")
                dropped += _drop_mount_point(self.node, ctid, config, key)
                config.current.delete(key)
            mp_changed = set()
            for key, value in (changes or {}).items():
                if key in ("rootfs", "lock", "parent", "template"):
                    raise ValidationError(f"{key}: managed by the engine; it cannot be set directly", key=key)
                if key.startswith("mp") and key[2:].isdigit():
                    check_not_template(config, f"changing its mount point {key}")
                if key.startswith("mp") and key[2:].isdigit():
                    check_unlocked(config)
                    if self.node.running(ctid):
                        raise InvalidState(
                            f"{key}: container {ctid} is running; mount points change when it is stopped"
                        )
                    old = config.current.values.get(key)
                    if old and old.split(",")[0] != str(value).split(",")[0]:
                        raise ValidationError(f"{key}: already holds {old.split(',')[0]}; delete it first", key=key)
                    mp_changed.add(key)
                config.set(key, str(value))
            if config.current.raw_values("lxc.idmap") or config.unprivileged:
                self.node.idmap_of(config)  # validate
            if mp_changed:
                idmap = self.node.idmap_of(config)
                allocate_mount_points(self.node, ctid, config, idmap.host_uid(0) if idmap else 0, revert, mp_changed)
            touched = set(changes or {}) | set(delete or [])
            net_touched = {k for k in touched if k.startswith("net") and k[3:].isdigit()}
            if net_touched:
                configure_network(self.node, ctid, config)
            plugged = _check_devices_and_hook(self.node, config, set(changes or {}))
            running = self.node.running(ctid)
            live: list[str] = []
            if running:
                self.cgroups.apply(str(ctid), limits_of(config))
                live = sorted(touched & LIVE_KEYS)
                new = [d for d in plugged if d.key not in self.config(ctid).current.values]
                if new:
                    _hotplug(self.node, ctid, running.pid, config, new)
                    live = sorted(set(live) | {d.key for d in new})
                if net_touched:
                    from engine.network import container as network

                    live = sorted(
                        set(live)
                        | set(network.reconfigure(self.layout.root, ctid, running.pid, self.config(ctid), config))
                    )
            faults.point("set:applied")
            write_config(self.layout.config_path(ctid), config)
            revert.success()
            for driver, vol in dropped:
                driver.delete(vol)
            return live


def limits_of(config: ContainerConfig) -> Limits:
    """The cgroup limits a container's config asks for."""
    cores = config.get("cores")
    cpulimit = config.get("cpulimit")
    return Limits(
        memory_mb=config.get("memory"),
        swap_mb=config.get("swap"),
        cpus=config.get("cpuset") or (_pick_cpus(cores, config.ctid) if cores else None),
        cpulimit=cpulimit or None,
        cpuunits=config.get("cpuunits"),
        pids=config.get("pids") or None,
        ioweight=config.get("ioweight") or None,
    )


def _drop_mount_point(node: Node, ctid: int, config: ContainerConfig, key: str) -> list:
    """The volume to destroy when ``mpN`` or ``unusedN`` is deleted (none for a bind mount or another key);
    as Proxmox, deleting an unused volume destroys it, unless a snapshot still holds it."""
    if key.startswith("unused") and key[6:].isdigit() and key in config.current.values:
        volid = config.current.values[key]
        for name, section in config.snapshots.items():
            if any(v.volid == volid for v in volumes_of(section)):
                raise InvalidState(f"{key}: volume {volid} is part of snapshot '{name}'; delete the snapshot first")
        try:
            _, driver, vol = node.storages.resolve(volid, ctid, key=key)
        except ValidationError:
            return []  # not this container's volume (a hand-edited config): only the key goes
        return [(driver, vol)]
    if not (key.startswith("mp") and key[2:].isdigit()) or key not in config.current.values:
        return []
    check_unlocked(config)
    if node.running(ctid):
        raise InvalidState(f"{key}: container {ctid} is running; mount points change when it is stopped")
    volume = next(v for v in volumes_of(config.current) if v.key == key)
    if volume.is_bind:
        return []
    for name, section in config.snapshots.items():
        if any(v.volid == volume.volid for v in volumes_of(section)):
            raise InvalidState(f"{key}: volume {volume.volid} is part of snapshot '{name}'; delete the snapshot first")
    _, driver, vol = node.storages.resolve(volume.volid, ctid, key=key)
    return [(driver, vol)]


def _pick_cpus(cores: int, ctid: int) -> str | None:
    """``cores`` CPUs out of the host's, spread by container ID so containers do not all share CPU 0."""
    online = sorted(os.sched_getaffinity(0))
    if cores >= len(online):
        return None
    offset = ctid % len(online)
    chosen = sorted(online[(offset + i) % len(online)] for i in range(cores))
    return ",".join(str(c) for c in chosen)


def _check_devices_and_hook(node: Node, config: ContainerConfig, changed: set[str]) -> list:
    """The changed ``devN`` checked against the host (each a device one may pass), the hookscript's file."""
    from engine import devices, hooks

    if "hookscript" in changed:
        hooks.resolve(node.storages, config.current.values["hookscript"])
    return [d for d in devices.devices_of(config) if d.key in changed]


def _hotplug(node: Node, ctid: int, pid: int, config: ContainerConfig, new: list) -> None:
    """Devices added to a running container: the cgroup allows them first, then each node is put in its /dev."""
    from engine import devices, nesting
    from engine.storage.mountns import run

    kept = devices.devices_of(config) + nesting.features_of(config, lambda _: None).devices  # fuse=1's too
    node.cgroups.allow_devices(str(ctid), [d.rule for d in kept])
    idmap = node.idmap_of(config)
    for device in new:
        staged = devices.stage(node.layout.run, ctid, device, idmap)
        try:
            run(devices.hotplug, pid, staged, device.path)
        except OSError as exc:
            raise InvalidState(f"{device.key}: cannot add {device.path} to running container {ctid}: {exc}") from exc
