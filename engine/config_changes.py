"""Changing a container's config: limits applied live, mount points allocated and dropped, the network."""
from __future__ import annotations

import os

from engine.cgroups.base import Limits
from engine.config import ContainerConfig, write_config
from engine.errors import EngineError, InvalidState, ValidationError
from engine.reverter import Reverter
from engine.state import container_lock
from engine.status import _has_network
from engine.volumes import volumes_of

LIVE_KEYS = {"memory", "swap", "cores", "cpulimit", "cpuunits", "pids", "ioweight"}


class ConfigChangeOps:
    """Mixed into :class:`engine.lifecycle.Engine`; uses its the state readers and the volume allocation of creation."""

    # ---- configuration ---------------------------------------------------------------------
    def limits(self, config: ContainerConfig) -> Limits:
        cores = config.get("cores")
        cpulimit = config.get("cpulimit")
        return Limits(memory_mb=config.get("memory"), swap_mb=config.get("swap"),
                      cpus=_pick_cpus(cores, config.ctid) if cores else None,
                      cpulimit=cpulimit or None, cpuunits=config.get("cpuunits"),
                      pids=config.get("pids") or None, ioweight=config.get("ioweight") or None)

    def set(self, ctid: int, changes: dict[str, str] | None = None, delete: list[str] | None = None,
            digest: str | None = None) -> list[str]:
        """Change config keys; limits of a running container change at once.  Returns the keys applied live.

        ``mpN: <storage>:<GiB>,mp=/path`` allocates a volume; deleting an ``mpN`` of a storage volume
        destroys the volume once the new config is written (never one a snapshot still holds).
        """
        with container_lock(self.layout, ctid), Reverter() as revert:
            config = self.config(ctid)
            if config.current.values.get("lock") == "create":  # half made: only unlock, create or restore
                self._check_unlocked(config)
            if digest and digest != config.digest():
                raise InvalidState(f"container {ctid}'s config was changed by someone else; reload and retry")
            dropped = []
            for key in delete or []:
                if key == "rootfs":
                    raise ValidationError("rootfs: cannot be deleted", key=key)
                if key in ("lock", "parent"):
                    raise ValidationError(f"{key}: managed by the engine; use 'unlock' for a lock", key=key)
                dropped += self._drop_mount_point(ctid, config, key)
                config.current.delete(key)
            mp_changed = set()
            for key, value in (changes or {}).items():
                if key in ("rootfs", "lock", "parent"):
                    raise ValidationError(f"{key}: managed by the engine; it cannot be set directly", key=key)
                if key.startswith("mp") and key[2:].isdigit():
                    self._check_unlocked(config)
                    if self._running(ctid):
                        raise InvalidState(f"{key}: container {ctid} is running; mount points change when it is "
                                           "stopped")
                    old = config.current.values.get(key)
                    if old and old.split(",")[0] != str(value).split(",")[0]:
                        raise ValidationError(f"{key}: already holds {old.split(',')[0]}; delete it first", key=key)
                    mp_changed.add(key)
                config.set(key, str(value))
            if config.current.raw_values("lxc.idmap") or config.unprivileged:
                self._idmap(config)  # validate
            if mp_changed:
                idmap = self._idmap(config)
                self._allocate_mount_points(ctid, config, idmap.host_uid(0) if idmap else 0, revert, mp_changed)
            touched = set(changes or {}) | set(delete or [])
            net_touched = {k for k in touched if k.startswith("net") and k[3:].isdigit()}
            if net_touched:
                self._configure_network(ctid, config)
            running = self._running(ctid)
            live: list[str] = []
            if running:
                self.cgroups.apply(str(ctid), self.limits(config))
                live = sorted(touched & LIVE_KEYS)
                if net_touched:
                    from engine.network import container as network

                    live = sorted(set(live) | set(network.reconfigure(self.layout.root, ctid, running.pid,
                                                                      self.config(ctid), config)))
            write_config(self.layout.config_path(ctid), config)
            revert.success()
            for driver, vol in dropped:
                driver.delete(vol)
            return live

    def _drop_mount_point(self, ctid: int, config: ContainerConfig, key: str) -> list:
        """The volume to destroy when ``mpN`` is deleted (none for a bind mount or another key)."""
        if not (key.startswith("mp") and key[2:].isdigit()) or key not in config.current.values:
            return []
        self._check_unlocked(config)
        if self._running(ctid):
            raise InvalidState(f"{key}: container {ctid} is running; mount points change when it is stopped")
        volume = next(v for v in volumes_of(config.current) if v.key == key)
        if volume.is_bind:
            return []
        for name, section in config.snapshots.items():
            if any(v.volid == volume.volid for v in volumes_of(section)):
                raise InvalidState(f"{key}: volume {volume.volid} is part of snapshot '{name}'; delete the snapshot "
                                   "first")
        _, driver, vol = self.storages.resolve(volume.volid, ctid, key=key)
        return [(driver, vol)]

    def _configure_network(self, ctid: int, config: ContainerConfig) -> None:
        """MACs and pool addresses chosen and every interface checked against the node, before writing."""
        if not _has_network(config):
            return
        from engine.network import container as network

        others = {}
        for other in self.ids():
            if other != ctid:
                try:
                    others[other] = self.config(other)
                except EngineError:
                    continue
        network.configure(self.layout.root, ctid, config, others)


def _pick_cpus(cores: int, ctid: int) -> str | None:
    """``cores`` CPUs out of the host's, spread by container ID so containers do not all share CPU 0."""
    online = sorted(os.sched_getaffinity(0))
    if cores >= len(online):
        return None
    offset = ctid % len(online)
    chosen = sorted(online[(offset + i) % len(online)] for i in range(cores))
    return ",".join(str(c) for c in chosen)
