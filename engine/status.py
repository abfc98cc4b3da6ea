"""A container's state read back: its config, whether it runs, its status and what its rootfs is.

No process of the engine stays behind per container: status is read back from
the run record, the kernel (pid and start time) and the container's cgroup, so
a container started by a process that has since exited or crashed is found
again.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from engine import consolelog, inits, procfs
from engine.config import ContainerConfig, read_config
from engine.errors import EngineError, NotFound, ValidationError
from engine.idmap import IdMap
from engine.state import RunRecord


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
    lock: str | None = None  # a persisted lock (backup, snapshot, rollback...): state changes are refused

    def as_dict(self) -> dict:
        return asdict(self)


class StatusOps:
    """Mixed into :class:`engine.lifecycle.Engine`; uses its ``layout``, ``storages``, ``cgroups`` and ``idmap``."""

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
                                 unprivileged=config.unprivileged, lock=config.current.values.get("lock"))
        if record:
            self._drain_console_quietly(ctid, record)
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

    # ---- the console log (engine.consolelog) ------------------------------------------------
    def console_log(self, ctid: int) -> bytes:
        """What the container's init wrote to its console, newest last, at most the node's cap."""
        self.config(ctid)
        self.drain_console(ctid)
        try:
            with open(self.layout.console_log(ctid), "rb") as handle:
                return handle.read(self.console_log_size)
        except FileNotFoundError:
            return b""

    def drain_console(self, ctid: int) -> int:
        """Copy the running container's new console output to its log; the number of bytes copied."""
        record = self._running(ctid)
        return self._drain_console(ctid, record) if record else 0

    def _drain_console(self, ctid: int, record: RunRecord) -> int:
        console = consolelog.take(record.pid, record.starttime, self.console_log_size)
        if console is None:
            return 0
        try:
            return consolelog.drain(console, self.layout.console_log(ctid), self.console_log_size)
        finally:
            os.close(console)

    def _drain_console_quietly(self, ctid: int, record: RunRecord) -> None:
        """A drain beside another operation (status, stop): it must not make that operation fail."""
        try:
            self._drain_console(ctid, record)
        except (OSError, EngineError):
            pass

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


def _has_network(config: ContainerConfig) -> bool:
    return any(key.startswith("net") and key[3:].isdigit() for key in config.current.values)


def _boot_time() -> float:
    with open("/proc/stat") as handle:
        for line in handle:
            if line.startswith("btime"):
                return float(line.split()[1])
    return 0.0
