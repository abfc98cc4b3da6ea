"""A node's containers as stored and as running: what every operation of the engine reads.

:class:`Node` holds the node's places (:class:`engine.state.Layout`), its
storages, its cgroup driver, the default id map and the console log cap, and
answers the questions each part of :class:`engine.lifecycle.Engine` asks
(a container's config, whether it runs, its id map, its rootfs volume).  The
parts (creation, power, snapshots, config changes, holds) take a ``Node`` and
import the functions they share from their modules, instead of calling one
another's private methods through the facade.

No process of the engine stays behind per container: whether one runs is read
back from the run record, the kernel (pid and start time) and the container's
cgroup, so a container started by a process that has since exited or crashed
is found again.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from engine import inits, procfs
from engine.cgroups.base import CgroupDriver
from engine.config import ContainerConfig, read_config
from engine.errors import EngineError, InvalidState, ValidationError
from engine.idmap import IdMap
from engine.state import Layout, RunRecord
from engine.storage import Storages

CREATE_LOCK = "create"  # Proxmox's persisted lock of a container being created or restored


@dataclass(frozen=True)
class Node:
    layout: Layout
    storages: Storages
    cgroups: CgroupDriver
    idmap: IdMap  # the default map of an unprivileged container without one of its own
    console_log_size: int

    # ---- configs ------------------------------------------------------------------------------
    def config(self, ctid: int) -> ContainerConfig:
        return read_config(self.layout.config_path(ctid), ctid)

    def exists(self, ctid: int) -> bool:
        return self.layout.config_path(ctid).exists()

    def ids(self) -> list[int]:
        return sorted(int(path.stem) for path in self.layout.config_dir.glob("*.conf") if path.stem.isdigit())

    def other_configs(self, ctid: int) -> dict[int, ContainerConfig]:
        """Every other container's config that reads (one removed meanwhile or broken is left out)."""
        others = {}
        for other in self.ids():
            if other != ctid:
                with contextlib.suppress(EngineError):
                    others[other] = self.config(other)
        return others

    def idmap_of(self, config: ContainerConfig) -> IdMap | None:
        """The map a container's ids are shifted by: its own ``lxc.idmap``, else the default; None if privileged."""
        if not config.unprivileged:
            return None
        lines = config.current.raw_values("lxc.idmap")
        return IdMap.from_lxc_lines(lines) if lines else self.idmap

    def rootfs_volume(self, config: ContainerConfig):
        """(storage, driver, vol) of the container's rootfs."""
        rootfs = config.get("rootfs")
        if not rootfs:
            raise ValidationError(f"container {config.ctid} has no rootfs in its config", key="rootfs")
        return self.storages.resolve(rootfs["volume"], config.ctid)

    # ---- running ------------------------------------------------------------------------------
    def running(self, ctid: int) -> RunRecord | None:
        """The run record if init is alive; rebuilt from the cgroup if the record is missing or stale."""
        record = RunRecord.load(self.layout.run_record(ctid))
        if record:
            stat = procfs.proc_stat(record.pid)
            if stat and stat.starttime == record.starttime and stat.state != "Z":
                return record
            reap(self.layout.run, ctid, record)  # its parent (a reaper engine) learns how it ended
        if not self.cgroups.exists(str(ctid)):
            return None
        init_pid = _find_init(self.cgroups.procs(str(ctid)))
        if init_pid is None:
            return None
        starttime = procfs.proc_starttime(init_pid)
        detected = inits.detect(Path(f"/proc/{init_pid}/root"))
        record = RunRecord(
            init_pid,
            starttime or 0,
            detected.name if detected else "unknown",
            _boot_time() + (starttime or 0) / os.sysconf("SC_CLK_TCK"),
        )
        record.save(self.layout.run_record(ctid))
        return record

    @contextlib.contextmanager
    def frozen(self, ctid: int, running: bool) -> Iterator[None]:
        """Freeze a running container's cgroup for the block; thaw always, unless it was suspended before
        (``suspend``: it stays frozen, as its owner asked)."""
        if not running or self.cgroups.frozen(str(ctid)):
            yield
            return
        self.cgroups.freeze(str(ctid))
        try:
            yield
        finally:
            self.cgroups.thaw(str(ctid))


def check_unlocked(config: ContainerConfig) -> None:
    """InvalidState naming the persisted lock, and how to clear it, if the container has one."""
    lock = config.current.values.get("lock")
    if lock == CREATE_LOCK:
        raise InvalidState(
            f"container {config.ctid} is locked (create): a create or restore of it was "
            f"interrupted; remove what it left with 'python -m engine unlock {config.ctid}', "
            "or create or restore it again"
        )
    if lock:
        raise InvalidState(
            f"container {config.ctid} is locked ({lock}): an operation did not finish; "
            f"check it, then clear the lock with 'python -m engine unlock {config.ctid}'"
        )


def is_template(config: ContainerConfig) -> bool:
    return bool(config.current.get("template"))


def check_not_template(config: ContainerConfig, what: str) -> None:
    """InvalidState when ``what`` would change or run a template (a read-only base for clones)."""
    if is_template(config):
        raise InvalidState(f"container {config.ctid} is a template: {what} is not allowed; clone it instead")


def has_network(config: ContainerConfig) -> bool:
    return any(key.startswith("net") and key[3:].isdigit() for key in config.current.values)


def reap(run_dir: Path, ctid: int, record) -> None:
    """Reap an exited container init if it is our child, never a recycled pid (see :mod:`engine.reaper`),
    and keep how it ended for restart policies."""
    from engine.reaper import note_exit, reap_init

    note_exit(run_dir, ctid, reap_init(record.pid, record.starttime))


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


def _boot_time() -> float:
    with open("/proc/stat") as handle:
        for line in handle:
            if line.startswith("btime"):
                return float(line.split()[1])
    return 0.0
