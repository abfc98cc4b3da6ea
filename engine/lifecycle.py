"""The engine's public API: create, start, stop, shutdown, reboot, destroy, status, list, set, exec.

Every state change takes the container's lock.  No process of the engine
stays behind per container: status is read back from the run record, the
kernel (pid and start time) and the container's cgroup, so a container
started by a process that has since exited or crashed is found again.
"""
from __future__ import annotations

import os
import select
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from engine import inits, procfs
from engine.cgroups import detect as detect_cgroups
from engine.cgroups.base import CgroupDriver, Limits
from engine.config import ContainerConfig, parse_ctid, read_config, write_config
from engine.errors import AlreadyExists, EngineError, InvalidState, NotFound, StartError, ValidationError
from engine.idmap import IdMap
from engine.reverter import Reverter
from engine.snapshots import SnapshotOps
from engine.state import DEFAULT_CGROUP_PARENT, DEFAULT_ROOT, DEFAULT_RUN, Layout, RunRecord, container_lock
from engine.storage import Storages, parse_new_volume
from engine.volumes import MountPlan, check_bind_source, mount_activation, render_props, volumes_of

PR_SET_CHILD_SUBREAPER = 36
VZTMPL_PREFIX = "local:vztmpl/"  # Proxmox's name for a template in the local store


@dataclass
class ContainerStatus:
    ctid: int
    hostname: str
    status: str  # "running" or "stopped"
    pid: int | None = None
    init: str | None = None
    uptime: float | None = None
    unprivileged: bool = True
    memory_bytes: int | None = None
    memory_limit_bytes: int | None = None
    cpu_ns: int | None = None
    pids: int | None = None
    ipv4: list[str] | None = None
    ipv6: list[str] | None = None
    net: dict[str, dict[str, int]] | None = None  # per interface: rx/tx bytes and packets

    def as_dict(self) -> dict:
        return asdict(self)


class Engine(SnapshotOps):
    """One node's containers.  Cheap to construct; hold one per long-lived process for the warm path."""

    def __init__(self, root: Path | str = DEFAULT_ROOT, run_dir: Path | str = DEFAULT_RUN,
                 cgroup_parent: str = DEFAULT_CGROUP_PARENT, idmap: IdMap | None = None, reaper: bool = False,
                 cgroups: CgroupDriver | None = None):
        self.layout = Layout(Path(root), Path(run_dir))
        self.layout.ensure()
        self.storages = Storages(self.layout.root)
        self.cgroups = cgroups or detect_cgroups(cgroup_parent)
        self.idmap = idmap or IdMap()
        if reaper:
            # Orphaned container inits are re-parented to this process rather than the host's
            # PID 1, and reaped here when they stop: a long-lived engine (the node agent) leaves
            # no zombie even on hosts whose PID 1 does not reap.
            from engine import syscalls

            syscalls.prctl(PR_SET_CHILD_SUBREAPER, 1)

    # ---- reading state -------------------------------------------------------------------
    def config(self, ctid: int) -> ContainerConfig:
        return read_config(self.layout.config_path(ctid), ctid)

    def exists(self, ctid: int) -> bool:
        return self.layout.config_path(ctid).exists()

    def ids(self) -> list[int]:
        found = []
        for path in self.layout.config_dir.glob("*.conf"):
            if path.stem.isdigit():
                found.append(int(path.stem))
        return sorted(found)

    def list(self) -> list[ContainerStatus]:
        result = []
        for ctid in self.ids():
            try:
                result.append(self.status(ctid))
            except NotFound:
                continue  # destroyed while we listed
        return result

    def status(self, ctid: int, stats: bool = True) -> ContainerStatus:
        config = self.config(ctid)
        record = self._running(ctid)
        status = ContainerStatus(ctid, config.hostname, "running" if record else "stopped",
                                 unprivileged=config.unprivileged)
        if record:
            status.pid, status.init = record.pid, record.init
            status.uptime = max(0.0, time.time() - record.started_at)
            if stats:
                try:
                    usage = self.cgroups.stats(str(ctid))
                    status.memory_bytes, status.memory_limit_bytes = usage.memory_bytes, usage.memory_limit_bytes
                    status.cpu_ns, status.pids = usage.cpu_ns, usage.pids
                except EngineError:
                    pass
                if _has_network(config):
                    from engine.network import procnet

                    found = procnet.addresses(record.pid)
                    status.ipv4, status.ipv6 = found["ipv4"], found["ipv6"]
                    status.net = procnet.counters(record.pid)
        return status

    def _running(self, ctid: int) -> RunRecord | None:
        """The run record if init is alive; rebuilt from the cgroup if the record is missing or stale."""
        record = RunRecord.load(self.layout.run_record(ctid))
        if record:
            stat = procfs.proc_stat(record.pid)
            if stat and stat.starttime == record.starttime and stat.state != "Z":
                return record
            self._reap(record.pid)
        if not self.cgroups.exists(str(ctid)):
            return None
        init_pid = self._find_init(self.cgroups.procs(str(ctid)))
        if init_pid is None:
            return None
        starttime = procfs.proc_starttime(init_pid)
        detected = inits.detect(Path(f"/proc/{init_pid}/root"))
        record = RunRecord(init_pid, starttime or 0, detected.name if detected else "unknown",
                           _boot_time() + (starttime or 0) / os.sysconf("SC_CLK_TCK"))
        record.save(self.layout.run_record(ctid))
        return record

    @staticmethod
    def _find_init(pids: list[int]) -> int | None:
        """The process that is PID 1 in the container's pid namespace."""
        for pid in pids:
            try:
                with open(f"/proc/{pid}/status") as handle:
                    for line in handle:
                        if line.startswith("NSpid:"):
                            ids = line.split()[1:]
                            stat = procfs.proc_stat(pid)
                            if len(ids) > 1 and ids[-1] == "1" and stat and stat.state != "Z":
                                return pid
            except (FileNotFoundError, ProcessLookupError):
                continue
        return None

    @staticmethod
    def _reap(pid: int) -> None:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass

    def _rootfs(self, config: ContainerConfig) -> Path:
        """The host directory a start enters: the rootfs itself, or the mount point of an image or overlay."""
        _, driver, vol = self._rootfs_volume(config)
        return driver.rootfs(vol)

    def _rootfs_volume(self, config: ContainerConfig):
        rootfs = config.get("rootfs")
        if not rootfs:
            raise ValidationError(f"container {config.ctid} has no rootfs in its config", key="rootfs")
        return self.storages.resolve(rootfs["volume"], config.ctid)

    def _idmap(self, config: ContainerConfig) -> IdMap | None:
        if not config.unprivileged:
            return None
        lines = config.current.raw_values("lxc.idmap")
        return IdMap.from_lxc_lines(lines) if lines else self.idmap

    # ---- create and destroy ----------------------------------------------------------------
    def create(self, ctid: int | str, source: Path | str, options: dict[str, str] | None = None) -> ContainerStatus:
        """Create a container from a rootfs tarball or a template directory.

        ``source`` is a path, or a template of the store named as Proxmox does: ``local:vztmpl/<name>``.
        """
        ctid = parse_ctid(ctid)
        source = self.template_path(source)
        config = ContainerConfig(ctid)
        options = dict(options or {})
        storage_id, size, rootfs_props = self._new_rootfs(options.pop("rootfs", None), options.pop("storage", None))
        for key, value in options.items():
            if key in ("lock", "parent"):
                raise ValidationError(f"{key}: set by the engine, not by the caller", key=key)
            config.set(key, str(value))
        if "hostname" not in config.current.values:
            config.set("hostname", f"CT{ctid}")
        if "unprivileged" not in config.current.values:
            config.set("unprivileged", "1")
        if not source.exists():
            raise ValidationError(f"template '{source}' does not exist", key="ostemplate")
        idmap = self._idmap(config)
        with container_lock(self.layout, ctid), Reverter() as revert:
            if self.exists(ctid):
                raise AlreadyExists(f"container {ctid} already exists")
            # Volumes without a config are what an interrupted create leaves (the process was
            # killed before its undo ran): nothing else owns them, so they are cleared, not refused.
            self._free_leftovers(ctid)
            owner = idmap.host_uid(0) if idmap else 0
            storage = self.storages.get(storage_id, content="rootdir")
            driver = storage.driver_for_new(size)
            from engine.unpack import copy_tree, extract_archive  # heavy (zstandard): only create needs it

            def fill(target: Path) -> None:
                if source.is_dir():
                    copy_tree(source, target, idmap)
                else:
                    extract_archive(source, target, idmap)

            st = source.stat()
            key = f"{source.resolve()}:{st.st_size}:{st.st_mtime_ns}:{idmap.uid_map_text() if idmap else 'host'}"
            revert.add(self._free_leftovers, ctid)
            vol = driver.create(ctid, 0, owner, size, fill, fill_key=key)
            revert.add(driver.delete, vol)
            init_name, ostype = self._inspect(driver, vol)
            if init_name is None:
                raise ValidationError(f"template '{source}' has no /sbin/init: it cannot boot as a system container",
                                      key="ostemplate")
            config.current.values["rootfs"] = render_props(f"{storage_id}:{vol}", {**rootfs_props, "size": size}
                                                           if size else rootfs_props)
            if "ostype" not in config.current.values:
                config.set("ostype", ostype)
            self._allocate_mount_points(ctid, config, owner, revert)
            self._configure_network(ctid, config)
            write_config(self.layout.config_path(ctid), config)
            revert.success()
        return self.status(ctid)

    def _new_rootfs(self, rootfs: str | None, storage: str | None) -> tuple[str, int | None, dict]:
        """The storage and size a new rootfs goes to: ``rootfs=<storage>:<GiB>`` or ``storage=<id>``."""
        if rootfs is None:
            return storage or "local", None, {}
        from engine.config import SCHEMA

        props = SCHEMA["rootfs"](str(rootfs), "rootfs")
        new = parse_new_volume(str(props.pop("volume")), "rootfs")
        if new is None:
            raise ValidationError(f"rootfs: at create give '<storage>:<size in GiB>' (e.g. local-btrfs:8), "
                                  f"not '{rootfs}'", key="rootfs")
        props.pop("size", None)
        return new[0], new[1], props

    def _inspect(self, driver, vol: str) -> tuple[str | None, str]:
        """The init and ostype of a new volume's tree (mounted in a private namespace when it must be)."""

        def look(path: Path) -> tuple[str | None, str]:
            detected = inits.detect(path)
            return (detected.name if detected else None), _ostype(path)

        if not driver.info.mounted_at_start:
            return look(driver.rootfs(vol))
        from engine.storage.mountns import run

        return run(lambda: look(driver.copy_source(vol, None)))

    def _allocate_mount_points(self, ctid: int, config: ContainerConfig, owner: int, revert: Reverter,
                               keys: set[str] | None = None) -> None:
        """Allocate the volumes ``mpN: <storage>:<GiB>,mp=...`` ask for; check bind mounts' host paths."""
        used = set()
        for volume in volumes_of(config.current) + [v for s in config.snapshots.values() for v in volumes_of(s)]:
            from engine.volumes import disk_number

            number = disk_number(volume.volid)
            if number is not None:
                used.add(number)
        for volume in volumes_of(config.current):
            if volume.key == "rootfs" or (keys is not None and volume.key not in keys):
                continue
            if volume.is_bind:
                check_bind_source(volume.volid, volume.key, self.layout.root)
                continue
            new = parse_new_volume(volume.volid, volume.key)
            if new is None:
                self.storages.resolve(volume.volid, ctid, key=volume.key)  # an existing volume: must be ours
                continue
            storage_id, size = new
            driver = self.storages.get(storage_id, content="rootdir", key=volume.key).driver_for_new(size)
            disk = 1
            while disk in used:
                disk += 1
            used.add(disk)
            vol = driver.create(ctid, disk, owner, size, None)
            revert.add(driver.delete, vol)
            props = {k: v for k, v in volume.props.items() if k not in ("volume", "size")}
            config.current.values[volume.key] = render_props(f"{storage_id}:{vol}", {**props, "size": size}
                                                             if size else props)

    def template_path(self, source: Path | str) -> Path:
        """A path as given, or the store's file for a ``local:vztmpl/<name>`` volume."""
        text = str(source)
        if not text.startswith(VZTMPL_PREFIX):
            return Path(source)
        name = text[len(VZTMPL_PREFIX):]
        if not name or "/" in name or "\x00" in name or name.startswith("."):
            raise ValidationError(f"template '{text}': the name must be a file name in the store", key="ostemplate")
        return self.layout.templates / name

    def make_template(self, ctid: int, name: str) -> Path:
        """A custom template in the store from a stopped container, its identity cleared."""
        from engine.templates.custom import make_template

        with container_lock(self.layout, ctid):
            config = self.config(ctid)
            if self._running(ctid):
                raise InvalidState(f"container {ctid} is running; stop it before making a template of it")
            return make_template(self._rootfs(config), self._idmap(config), self.layout.templates, name)

    def destroy(self, ctid: int, force: bool = False) -> None:
        with container_lock(self.layout, ctid):
            config = self.config(ctid)
            if config.get("protection"):
                raise InvalidState(f"container {ctid} is protected; clear 'protection' first")
            if self._running(ctid):
                if not force:
                    raise InvalidState(f"container {ctid} is running; stop it first or destroy with force")
                self._hard_stop(ctid)
            volumes = {}
            for name, section in [(None, config.current), *config.snapshots.items()]:
                for volume in volumes_of(section, storage_only=True):
                    try:
                        _, driver, vol = self.storages.resolve(volume.volid, ctid, key=volume.key)
                    except ValidationError:
                        continue  # not this container's (a hand-edited config): never destroyed from here
                    volumes[volume.volid] = (driver, vol)
                    if name is not None:
                        clones = driver.linked_clones(vol, name)
                        if clones:
                            raise InvalidState(f"container {ctid}'s snapshot '{name}' is the base of linked clone"
                                               f"{'s' if len(clones) > 1 else ''} {', '.join(map(str, clones))}; "
                                               "destroy those first")
            for driver, vol in volumes.values():
                driver.delete(vol)
            self.layout.config_path(ctid).unlink()
            self._free_leftovers(ctid)
            for path in (self.layout.console_log(ctid), self.layout.run_record(ctid),
                         self.layout.run / "lock" / f"{ctid}.lock"):
                path.unlink(missing_ok=True)

    # ---- start and stop --------------------------------------------------------------------
    def start(self, ctid: int) -> ContainerStatus:
        with container_lock(self.layout, ctid):
            record = self._start(ctid)
        config = self.config(ctid)
        return ContainerStatus(ctid, config.hostname, "running", pid=record.pid, init=record.init, uptime=0.0,
                               unprivileged=config.unprivileged)

    def _start(self, ctid: int) -> RunRecord:
        config = self.config(ctid)
        if self._running(ctid):
            raise InvalidState(f"container {ctid} is already running")
        self._check_unlocked(config)
        _, driver, vol = self._rootfs_volume(config)
        rootfs = driver.rootfs(vol)
        if not rootfs.is_dir() or rootfs.is_symlink():
            raise StartError("rootfs", f"{rootfs} is missing or not a directory")
        init = None
        if not driver.info.mounted_at_start:  # else it is only seen once mounted: init checks it inside
            init = inits.detect(rootfs)
            if init is None:
                raise StartError("init", f"{rootfs} has no /sbin/init")
        idmap = self._idmap(config)
        name = str(ctid)
        from engine import start  # the start machinery (ctypes, seccomp) loads only when something starts

        with Reverter() as revert:
            if self.cgroups.exists(name):
                self.cgroups.kill(name)  # left over from a crash: no process may survive in it
                self.cgroups.destroy(name)
            owner = (idmap.host_uid(0), idmap.host_gid(0)) if idmap else (None, None)
            self.cgroups.create(name, *owner)
            revert.add(self._cleanup_cgroup, name)
            self.cgroups.apply(name, self.limits(config))
            prepare = []
            plan = self._mount_plan(ctid, config, driver, vol, idmap)
            if plan is not None:
                revert.add(plan.release)
                prepare.append(_volume_mounts(plan))
            if _has_network(config):
                from engine.network import container as network

                prepare = network.start_steps(self.layout.root, ctid, config)
                revert.add(network.stopped, self.layout.root, ctid, config)
            spec = start.StartSpec(ctid=ctid, rootfs=rootfs, hostname=config.hostname, idmap=idmap,
                                   cgroup_procs=self.cgroups.procs_file(name),
                                   cgroup2=self.cgroups.ns_path(name) is not None,
                                   console_log=self.layout.console_log(ctid), keyctl=config.feature("keyctl"),
                                   extra_setup=_distro_setup(config.hostname, init), prepare=prepare,
                                   reenter_rootfs=plan is not None and plan.rootfs_mount is not None)
            try:
                pid = start.spawn(spec)
            finally:
                if plan is not None:
                    plan.release()
            if init is None:
                init = inits.detect(Path(f"/proc/{pid}/root")) or inits.SYSVINIT
            record = RunRecord(pid, procfs.proc_starttime(pid) or 0, init.name, time.time())
            record.save(self.layout.run_record(ctid))
            revert.success()
        return record

    def _mount_plan(self, ctid: int, config: ContainerConfig, driver, vol: str, idmap) -> MountPlan | None:
        """The rootfs mount (image, overlay) and the mount points, or None when there is nothing to mount."""
        mounts = []
        for volume in volumes_of(config.current):
            if volume.key == "rootfs":
                continue
            if volume.is_bind:
                from engine import syscalls as sc
                from engine.storage.base import Activation

                real = check_bind_source(volume.volid, volume.key, self.layout.root)
                activation = Activation(real, None, sc.MS_BIND)
            else:
                _, mp_driver, mp_vol = self.storages.resolve(volume.volid, ctid, key=volume.key)
                activation = mount_activation(mp_driver, mp_vol)
            mounts.append((str(volume.props["mp"]), activation, bool(volume.props.get("ro"))))
        rootfs_mount = driver.activate(vol)
        if rootfs_mount is None and not mounts:
            return None
        owner = (idmap.host_uid(0), idmap.host_gid(0)) if idmap else (0, 0)
        return MountPlan(str(driver.rootfs(vol)), rootfs_mount, mounts, owner)

    def _cleanup_cgroup(self, name: str) -> None:
        self.cgroups.kill(name)
        self.cgroups.destroy(name)

    def stop(self, ctid: int) -> None:
        """Hard stop: kill every process of the container at once."""
        with container_lock(self.layout, ctid):
            self.config(ctid)
            if not self._running(ctid):
                raise InvalidState(f"container {ctid} is not running")
            self._hard_stop(ctid)

    def _hard_stop(self, ctid: int) -> None:
        record = self._running(ctid)
        if record:
            try:
                pidfd = os.pidfd_open(record.pid)
            except ProcessLookupError:
                pidfd = None
            if pidfd is not None:
                try:
                    # Killing PID 1 of the namespace takes every process in it down with it.
                    signal.pidfd_send_signal(pidfd, 9)
                    select.select([pidfd], [], [], 5.0)
                finally:
                    os.close(pidfd)
            self._reap(record.pid)
        self._cleanup_after_exit(ctid)

    def _cleanup_after_exit(self, ctid: int) -> None:
        name = str(ctid)
        if self.cgroups.exists(name):
            self.cgroups.kill(name)
            self.cgroups.destroy(name)
        config = self.config(ctid)
        if _has_network(config):
            from engine.network import container as network

            network.stopped(self.layout.root, ctid, config)
        self.layout.run_record(ctid).unlink(missing_ok=True)

    def shutdown(self, ctid: int, timeout: float = 60.0, force_stop: bool = True) -> None:
        """Ask init to power off; after ``timeout`` seconds stop it hard, or fail if ``force_stop`` is off."""
        with container_lock(self.layout, ctid, timeout=10.0):
            self._shutdown(ctid, timeout, force_stop)

    def _shutdown(self, ctid: int, timeout: float, force_stop: bool) -> None:
        self.config(ctid)
        record = self._running(ctid)
        if not record:
            raise InvalidState(f"container {ctid} is not running")
        init = inits.BY_NAME.get(record.init, inits.SYSVINIT)
        pidfd = os.pidfd_open(record.pid)
        try:
            signal.pidfd_send_signal(pidfd, init.poweroff_signal)
            ready, _, _ = select.select([pidfd], [], [], timeout)
        finally:
            os.close(pidfd)
        if not ready:
            if not force_stop:
                raise InvalidState(f"container {ctid} did not shut down within {timeout:g} s; it is still running")
            self._hard_stop(ctid)
            return
        self._reap(record.pid)
        self._cleanup_after_exit(ctid)

    def reboot(self, ctid: int, timeout: float = 60.0) -> ContainerStatus:
        """A clean shutdown followed by a start, as ``pct reboot`` does."""
        with container_lock(self.layout, ctid, timeout=10.0):
            self._shutdown(ctid, timeout, force_stop=True)
            self._start(ctid)
        return self.status(ctid)

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

    # ---- running commands ------------------------------------------------------------------
    def _attach_spec(self, ctid: int, argv: list[str], tty: bool, env: dict[str, str] | None,
                     cwd: str):
        config = self.config(ctid)
        record = self._running(ctid)
        if not record:
            raise InvalidState(f"container {ctid} is not running")
        if not argv:
            raise ValidationError("no command given", key="command")
        from engine import attach

        return attach.AttachSpec(init_pid=record.pid, argv=list(argv),
                                 cgroup_procs=_cgroup_procs_of(record.pid, self.cgroups.mounts), env=env or {},
                                 cwd=cwd, tty=tty, keyctl=config.feature("keyctl"))

    def exec(self, ctid: int, argv: list[str], stdio: tuple[int, int, int] | None = None,
             env: dict[str, str] | None = None, cwd: str = "/") -> int:
        """Run a command without a tty; stdio defaults to this process's own. Returns its exit code."""
        from engine import attach

        return attach.run(self._attach_spec(ctid, argv, False, env, cwd), stdio)

    def exec_output(self, ctid: int, argv: list[str], input: bytes = b"", env: dict[str, str] | None = None,
                    cwd: str = "/") -> tuple[int, bytes, bytes]:
        """Run a command and collect its output: (exit code, stdout, stderr)."""
        from engine import attach

        return attach.run_capture(self._attach_spec(ctid, argv, False, env, cwd), input)

    def enter(self, ctid: int, argv: list[str] | None = None) -> int:
        """An interactive shell (or command) on a new pty inside the container."""
        from engine import attach

        return attach.interactive(self._attach_spec(ctid, argv or ["/bin/sh", "-l"], True, None, "/root"))

    def open_terminal(self, ctid: int, argv: list[str], env: dict[str, str] | None = None,
                      cwd: str = "/root") -> tuple[int, int]:
        """Start ``argv`` on a new pty inside the container without waiting for it.

        Returns the joiner's pid (a child of the caller, which must reap it; its exit code is the
        command's) and the pty master.  The console relay serves browser terminals this way.
        """
        from engine import attach

        pid, master = attach.spawn(self._attach_spec(ctid, argv, True, env, cwd))
        assert master is not None
        return pid, master


LIVE_KEYS = {"memory", "swap", "cores", "cpulimit", "cpuunits", "pids", "ioweight"}


def _has_network(config: ContainerConfig) -> bool:
    return any(key.startswith("net") and key[3:].isdigit() for key in config.current.values)


def _pick_cpus(cores: int, ctid: int) -> str | None:
    """``cores`` CPUs out of the host's, spread by container ID so containers do not all share CPU 0."""
    online = sorted(os.sched_getaffinity(0))
    if cores >= len(online):
        return None
    offset = ctid % len(online)
    chosen = sorted(online[(offset + i) % len(online)] for i in range(cores))
    return ",".join(str(c) for c in chosen)


def _cgroup_procs_of(pid: int, mounts) -> list[str]:
    """The cgroup.procs files of init's own cgroups, so a command joins where init is (a leaf on v2)."""
    files = []
    with open(f"/proc/{pid}/cgroup") as handle:
        for line in handle:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            root = mounts.v1.get(controllers.split(",")[0]) if controllers else mounts.unified
            if root:
                files.append(f"{root}{path}/cgroup.procs")
    return files


def _boot_time() -> float:
    with open("/proc/stat") as handle:
        for line in handle:
            if line.startswith("btime"):
                return float(line.split()[1])
    return 0.0


def _ostype(rootfs: Path) -> str:
    """Proxmox's ostype from the rootfs's os-release; ``unmanaged`` when there is none (busybox)."""
    for candidate in ("etc/os-release", "usr/lib/os-release"):
        path = rootfs / candidate
        if path.is_file() and not path.is_symlink():
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("ID="):
                    value = line[3:].strip().strip('"')
                    return value if value in ("debian", "devuan", "ubuntu", "centos", "fedora", "opensuse",
                                              "archlinux", "alpine", "gentoo", "nixos") else "unmanaged"
    return "unmanaged"


def _volume_mounts(plan: MountPlan):
    """The start's prepare step that mounts the volumes in the new container's mount namespace."""
    from engine.storage.mountns import run
    from engine.volumes import apply_plan

    def volumes(pid: int) -> None:
        run(apply_plan, plan, join_pid=pid)

    return volumes


def _distro_setup(hostname: str, init: inits.InitSystem | None) -> list:
    """What the engine adjusts inside the rootfs at each start, as Proxmox's distro setup does.

    ``init`` is None when the rootfs is seen only once mounted (an image or an overlay): the
    step then looks at ``/sbin/init`` from inside.
    """
    steps = [_hostname_files(hostname)]
    if init is inits.SYSVINIT:
        steps.append(_sysvinit_powerfail)
    elif init is None:
        steps.append(_powerfail_if_sysvinit)
    return steps


def _powerfail_if_sysvinit() -> None:
    if inits.detect(Path("/")) is inits.SYSVINIT:
        _sysvinit_powerfail()


def _sysvinit_powerfail() -> None:
    """sysvinit powers off on SIGPWR only through a ``powerfail`` line in inittab: make sure there is one."""
    try:
        with open("/etc/inittab") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return
    if any(len(line.split(":")) >= 4 and line.split(":")[2] in ("powerfail", "powerwait") for line in lines):
        return
    try:
        with open("/etc/inittab", "a") as handle:
            handle.write(inits.SYSVINIT_POWERFAIL)
    except OSError:
        pass


def _hostname_files(hostname: str):
    """Inside the container, as its root: keep /etc/hostname and /etc/hosts in step with the config."""

    def hostname_files() -> None:
        if not os.path.isdir("/etc") or os.path.islink("/etc"):
            return
        try:
            try:
                with open("/etc/hostname") as handle:
                    current = handle.read()
            except FileNotFoundError:
                current = ""
            if current != hostname + "\n":
                with open("/etc/hostname", "w") as handle:
                    handle.write(hostname + "\n")
            try:
                with open("/etc/hosts") as handle:
                    hosts = handle.read()
            except FileNotFoundError:
                hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            short = hostname.split(".")[0]
            if not any(line.split()[1:2] and hostname in line.split()[1:] for line in hosts.splitlines()
                       if line.startswith("127.0.1.1")):
                lines = [line for line in hosts.splitlines() if not line.startswith("127.0.1.1")]
                names = f"{hostname} {short}" if short != hostname else hostname
                lines.append(f"127.0.1.1\t{names}")
                with open("/etc/hosts", "w") as handle:
                    handle.write("\n".join(lines) + "\n")
        except OSError:
            pass  # a read-only or odd rootfs must not stop the boot

    return hostname_files
