"""Starting and stopping containers: start, hard stop, clean shutdown, reboot, and the start's rootfs steps."""
from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine import consolelog, inits, procfs
from engine.config import ContainerConfig
from engine.errors import EngineError, InvalidState, StartError
from engine.reverter import Reverter
from engine.state import RunRecord, container_lock
from engine.status import ContainerStatus, _has_network
from engine.volumes import MountPlan, check_bind_source, mount_activation, volumes_of


class PowerOps:
    """Mixed into :class:`engine.lifecycle.Engine`; uses its the state readers, ``cgroups`` and ``limits``."""

    # ---- start and stop --------------------------------------------------------------------
    def start(self, ctid: int) -> ContainerStatus:
        with container_lock(self.layout, ctid):
            record = self._start(ctid)
        config = self.config(ctid)
        return ContainerStatus(ctid, config.hostname, "running", pid=record.pid, init=record.init, uptime=0.0,
                               unprivileged=config.unprivileged)

    def _start(self, ctid: int, allow_lock: str | None = None) -> RunRecord:
        config = self.config(ctid)
        if self._running(ctid):
            raise InvalidState(f"container {ctid} is already running")
        if allow_lock is None or config.current.values.get("lock") != allow_lock:
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
        consolelog.check_support()
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
            from engine import distro

            extra_setup = [distro.start_step(config)]
            if _has_network(config) or "nameserver" in config.current.values \
                    or "searchdomain" in config.current.values:
                from engine.network import container as network

                prepare += network.start_steps(self.layout.root, ctid, config)
                revert.add(network.stopped, self.layout.root, ctid, config)
                inside = network.inside_step(ctid, config)
                if inside is not None:
                    extra_setup.append(inside)
            spec = start.StartSpec(ctid=ctid, rootfs=rootfs, hostname=config.hostname, idmap=idmap,
                                   cgroup_procs=self.cgroups.procs_file(name),
                                   cgroup2=self.cgroups.ns_path(name) is not None,
                                   console_log=self.layout.console_log(ctid), console_size=self.console_log_size,
                                   seccomp_rules=start.seccomp.container_rules(config),
                                   extra_setup=extra_setup, prepare=prepare,
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
            with self._console_held(ctid, record):
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

    @contextmanager
    def _console_held(self, ctid: int, record) -> Iterator[None]:
        """Hold init's console across its exit and drain it after: a stop keeps the container's last words
        (the memfd would go with its last holder)."""
        try:
            console = consolelog.take(record.pid, record.starttime, self.console_log_size)
        except (OSError, EngineError):
            console = None
        try:
            yield
        finally:
            if console is not None:
                consolelog.drain_quietly(console, self.layout.console_log(ctid), self.console_log_size)
                os.close(console)

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
        with self._console_held(ctid, record):
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


def _volume_mounts(plan: MountPlan):
    """The start's prepare step that mounts the volumes in the new container's mount namespace."""
    from engine.storage.mountns import run
    from engine.volumes import apply_plan

    def volumes(pid: int) -> None:
        run(apply_plan, plan, join_pid=pid)

    return volumes
