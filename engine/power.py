"""Starting and stopping containers: start, hard stop, clean shutdown, reboot, and the start's rootfs steps."""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from engine import consolelog, faults, hooks, inits, procfs
from engine.config import ContainerConfig
from engine.config_changes import limits_of
from engine.errors import EngineError, InvalidState, StartError
from engine.node import Node, check_not_template, check_unlocked, has_network
from engine.reaper import reap_init
from engine.reverter import Reverter
from engine.state import RunRecord, container_lock
from engine.status import ContainerStatus
from engine.suspend import refuse_if_paused
from engine.volumes import MountPlan, check_bind_source, mount_activation, volumes_of


class PowerOps:
    """Mixed into :class:`engine.lifecycle.Engine`: each verb takes the container's lock and calls the
    module's functions, which :mod:`engine.hold`, :mod:`engine.snapshots` and :mod:`engine.creation` use too."""

    def start(self, ctid: int) -> ContainerStatus:
        """Start it; what the start could not give (lxcfs absent, a hook's failure) is in ``warnings``."""
        warnings: list[str] = []
        with container_lock(self.layout, ctid):
            record = start_container(self.node, ctid, warn=warnings.append)
        config = self.config(ctid)
        return ContainerStatus(
            ctid,
            config.hostname,
            "running",
            pid=record.pid,
            init=record.init,
            uptime=0.0,
            unprivileged=config.unprivileged,
            warnings=warnings,
        )

    def stop(self, ctid: int) -> None:
        """Hard stop: kill every process of the container at once."""
        with container_lock(self.layout, ctid):
            self.config(ctid)
            if not self.node.running(ctid):
                raise InvalidState(f"container {ctid} is not running")
            hooks.run(self.node.storages, self.config(ctid), "pre-stop", _log_warning)
            hard_stop(self.node, ctid)

    def shutdown(self, ctid: int, timeout: float = 60.0, force_stop: bool = True) -> None:
        """Ask init to power off; after ``timeout`` seconds stop it hard, or fail if ``force_stop`` is off."""
        with container_lock(self.layout, ctid, timeout=10.0):
            refuse_if_paused(self.node, ctid, "a shutdown (or stop it)")
            shutdown_container(self.node, ctid, timeout, force_stop)

    def reboot(self, ctid: int, timeout: float = 60.0) -> ContainerStatus:
        """A clean shutdown followed by a start, as ``pct reboot`` does."""
        with container_lock(self.layout, ctid, timeout=10.0):
            refuse_if_paused(self.node, ctid, "a reboot")
            shutdown_container(self.node, ctid, timeout, force_stop=True)
            start_container(self.node, ctid)
        return self.status(ctid)


# ---- the steps, under the container's lock (the caller's) ----------------------------------------
def _log_warning(message: str) -> None:
    import logging

    logging.getLogger("caisson.engine").warning("%s", message)


def start_container(
    node: Node, ctid: int, allow_lock: str | None = None, warn: Callable[[str], None] = _log_warning
) -> RunRecord:
    """Start a stopped container; ``allow_lock`` is a persisted lock the caller holds (a backup's hold).
    What the start goes on without (lxcfs, a post-start hook) is told to ``warn``."""
    config = node.config(ctid)
    if node.running(ctid):
        raise InvalidState(f"container {ctid} is already running")
    if allow_lock is None or config.current.values.get("lock") != allow_lock:
        check_unlocked(config)
    check_not_template(config, "starting it")
    _, driver, vol = node.rootfs_volume(config)
    rootfs = driver.rootfs(vol)
    if not rootfs.is_dir() or rootfs.is_symlink():
        raise StartError("rootfs", f"{rootfs} is missing or not a directory")
    from engine.oci import launch, restart  # application containers (OCI images, host binaries)

    app = launch.of(config)  # its command is PID 1: no init is needed
    restart.forget_exit(node.layout, ctid)
    hooks.release_post_stop(node.layout.run, ctid)
    init = inits.APP if app is not None else None
    if init is None and not driver.info.mounted_at_start:  # else it is only seen once mounted
        init = inits.detect(rootfs)
        if init is None:
            raise StartError("init", f"{rootfs} has no /sbin/init")
    idmap = node.idmap_of(config)
    consolelog.check_support()
    from engine import devices, lxcfs, nesting

    features = nesting.features_of(config, warn)
    passed = devices.devices_of(config) + features.devices  # each devN checked against the host first
    hooks.run(node.storages, config, "pre-start", warn)
    name = str(ctid)
    from engine import start  # the start machinery (ctypes, seccomp) loads only when something starts

    with Reverter() as revert:
        if node.cgroups.exists(name):
            _cleanup_cgroup(node, name)  # left over from a crash: no process may survive in it
        owner = (idmap.host_uid(0), idmap.host_gid(0)) if idmap else (None, None)
        node.cgroups.create(name, *owner, extra_devices=[device.rule for device in passed])
        revert.add(_cleanup_cgroup, node, name)
        if features.nesting and idmap:
            node.cgroups.delegate_subtree(name, *owner)
        host_views, inner_views = lxcfs.start_mounts(warn, features.nesting)
        extra_mounts = host_views + devices.start_mounts(node.layout.run, ctid, passed, idmap)
        revert.add(devices.unstage, node.layout.run, ctid)
        node.cgroups.apply(name, limits_of(config))
        prepare, prepare_early, prepare_late = [], [], []
        plan = mount_plan(node, ctid, config, driver, vol, idmap)
        if plan is not None:
            revert.add(plan.release)
            prepare.append(_volume_mounts(plan))
        from engine import distro, timezone

        # A rootfs that is a plain directory (nothing mounted at start) gets its distribution's files and its
        # interfaces configured from here, while init builds its tree; else both are steps inside.
        from_host = plan is None
        if from_host:
            # Before init is forked (not a late step): init need not wait on the engine for it; and early,
            # while the children fork, since it needs none of them.
            host_step = distro.host_step(config, rootfs, owner if idmap else (0, 0))
            prepare_early.append(host_step)
            extra_setup = []
        else:
            inside_distro = distro.start_step(config)
            extra_setup = [inside_distro]
        extra_setup += [step for step in [timezone.start_step(config)] if step]
        if has_network(config) or "nameserver" in config.current.values or "searchdomain" in config.current.values:
            from engine.network import container as network

            root = node.layout.root
            prepare_late += network.start_steps(root, ctid, config, host_step if from_host else None)
            revert.add(network.stopped, node.layout.root, ctid, config)
            inside = None if from_host else network.inside_step(ctid, config, inside_distro)
            if inside is not None:
                extra_setup.append(inside)
        from engine import ttys

        terminals = ttys.wanted(config)
        tty_socks = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) if terminals else None
        if tty_socks:
            revert.add(_close_all, tty_socks)
            extra_setup.append(ttys.inside_step(terminals, tty_socks[1]))
        spec = start.StartSpec(
            ctid=ctid,
            rootfs=rootfs,
            hostname=config.hostname,
            idmap=idmap,
            cgroup_procs=node.cgroups.procs_file(name),
            cgroup2=node.cgroups.ns_path(name) is not None,
            console_log=node.layout.console_log(ctid),
            console_size=node.console_log_size,
            seccomp_rules=start.seccomp.container_rules(config),
            extra_setup=extra_setup,
            prepare=prepare,
            prepare_early=prepare_early,
            prepare_late=prepare_late,
            extra_mounts=extra_mounts,
            nesting=features.nesting,
            inner_mounts=inner_views,
            rw_sys=features.rw_sys,
            reenter_rootfs=plan is not None and plan.rootfs_mount is not None,
            app=app,
            keep_fds={tty_socks[1].fileno()} if tty_socks else set(),
        )
        policy = start.notify.policy_of(config)
        if policy is not None:
            spec.notify = (policy, start.notify.socket_path(node.layout.run, ctid))
        faults.point("start:cgroup")
        try:
            pid = start.spawn(spec, defer_reap=True)
        finally:
            if plan is not None:
                plan.release()
        revert.add(start.reap_setup_children)
        if init is None:
            init = inits.detect(Path(f"/proc/{pid}/root")) or inits.SYSVINIT
        faults.point("start:spawned")
        record = RunRecord(pid, procfs.proc_starttime(pid) or 0, init.name, time.time())
        record.save(node.layout.run_record(ctid))
        revert.success()
    try:
        if tty_socks:
            try:
                ttys.register(node.layout.run, ctid, pid, record.starttime, ttys.receive(tty_socks[0]))
            finally:
                _close_all(tty_socks)
    finally:
        start.reap_setup_children()  # it exited while the run record and the terminals were handled
    from engine import provision

    provision.run_first_boot(node, ctid, record.pid, record.init, config, warn)
    hooks.run(node.storages, config, "post-start", warn)
    return record


def _close_all(socks) -> None:
    for sock in socks:
        sock.close()


def mount_plan(node: Node, ctid: int, config: ContainerConfig, driver, vol: str, idmap) -> MountPlan | None:
    """The rootfs mount (image, overlay) and the mount points, or None when there is nothing to mount."""
    mounts = []
    for volume in volumes_of(config.current):
        if volume.key == "rootfs":
            continue
        if volume.is_bind:
            from engine import syscalls as sc
            from engine.storage.base import Activation

            real = check_bind_source(volume.volid, volume.key, node.layout.root)
            activation = Activation(real, None, sc.MS_BIND)
        else:
            _, mp_driver, mp_vol = node.storages.resolve(volume.volid, ctid, key=volume.key)
            activation = mount_activation(mp_driver, mp_vol)
        mounts.append((str(volume.props["mp"]), activation, bool(volume.props.get("ro"))))
    rootfs_mount = driver.activate(vol)
    if rootfs_mount is None and not mounts:
        return None
    owner = (idmap.host_uid(0), idmap.host_gid(0)) if idmap else (0, 0)
    return MountPlan(str(driver.rootfs(vol)), rootfs_mount, mounts, owner)


def _cleanup_cgroup(node: Node, name: str) -> None:
    node.cgroups.kill(name)
    node.cgroups.destroy(name)


def hard_stop(node: Node, ctid: int) -> None:
    """Kill init (PID 1 of the namespace takes every process in it down with it); clean up after it."""
    post_stop = hooks.claim_post_stop(node.layout.run, ctid)
    record = node.running(ctid)
    if record:
        with _console_held(node, ctid, record):
            try:
                pidfd = os.pidfd_open(record.pid)
            except ProcessLookupError:
                pidfd = None
            if pidfd is not None:
                try:
                    signal.pidfd_send_signal(pidfd, 9)
                    select.select([pidfd], [], [], 5.0)
                finally:
                    os.close(pidfd)
            reap_init(record.pid, record.starttime)
    faults.point("stop:killed")
    _cleanup_after_exit(node, ctid, post_stop)


@contextmanager
def _console_held(node: Node, ctid: int, record: RunRecord) -> Iterator[None]:
    """Hold init's console across its exit and drain it after: a stop keeps the container's last words
    (the memfd would go with its last holder)."""
    try:
        console = consolelog.take(record.pid, record.starttime, node.console_log_size)
    except (OSError, EngineError):
        console = None
    try:
        yield
    finally:
        if console is not None:
            consolelog.drain_quietly(console, node.layout.console_log(ctid), node.console_log_size)
            os.close(console)


def _cleanup_after_exit(node: Node, ctid: int, post_stop: bool) -> None:
    name = str(ctid)
    if node.cgroups.exists(name):
        _cleanup_cgroup(node, name)
    config = node.config(ctid)
    if has_network(config):
        from engine.network import container as network

        network.stopped(node.layout.root, ctid, config)
    from engine import devices

    devices.unstage(node.layout.run, ctid)
    node.layout.run_record(ctid).unlink(missing_ok=True)
    if post_stop:
        hooks.run(node.storages, config, "post-stop", _log_warning)


def after_self_stop(node: Node, ctid: int, pid: int) -> None:
    """Init ``pid`` was reaped: if nothing of the engine stopped it (a poweroff inside; a stop claims the
    phase before init is told to go, and removes the run record), the post-stop phase, once.  The cleanup
    (cgroup, network, run record) stays with the restart policy's start or ``recovery``."""
    record = RunRecord.load(node.layout.run_record(ctid))
    if record is None or record.pid != pid or not hooks.claim_post_stop(node.layout.run, ctid):
        return
    try:
        config = node.config(ctid)
    except EngineError:
        return  # destroyed meanwhile
    hooks.run(node.storages, config, "post-stop", _log_warning)


def shutdown_container(node: Node, ctid: int, timeout: float, force_stop: bool) -> None:
    """Ask init to power off; after ``timeout`` seconds stop it hard, or fail if ``force_stop`` is off."""
    node.config(ctid)
    record = node.running(ctid)
    if not record:
        raise InvalidState(f"container {ctid} is not running")
    init = inits.BY_NAME.get(record.init, inits.SYSVINIT)
    hooks.run(node.storages, node.config(ctid), "pre-stop", _log_warning)
    post_stop = hooks.claim_post_stop(node.layout.run, ctid)
    from engine.oci.launch import halt_signal

    halt = halt_signal(node.config(ctid), init.poweroff_signal)  # an image's StopSignal wins, as in LXC
    with _console_held(node, ctid, record):
        pidfd = os.pidfd_open(record.pid)
        try:
            signal.pidfd_send_signal(pidfd, halt)
            ready, _, _ = select.select([pidfd], [], [], timeout)
        finally:
            os.close(pidfd)
    if not ready:
        if not force_stop:
            hooks.release_post_stop(node.layout.run, ctid)  # still running: its post-stop is yet to come
            raise InvalidState(f"container {ctid} did not shut down within {timeout:g} s; it is still running")
        hard_stop(node, ctid)
        return
    reap_init(record.pid, record.starttime)
    faults.point("shutdown:exited")
    _cleanup_after_exit(node, ctid, post_stop)


def _volume_mounts(plan: MountPlan):
    """The start's prepare step that mounts the volumes in the new container's mount namespace."""
    from engine.storage.mountns import run
    from engine.volumes import apply_plan

    def volumes(pid: int) -> None:
        run(apply_plan, plan, join_pid=pid)

    return volumes
