"""A container's state read back: its config, its status and its console log (:mod:`engine.node` answers
whether it runs)."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from engine import consolelog
from engine.config import ContainerConfig
from engine.errors import EngineError, NotFound
from engine.idmap import IdMap
from engine.node import has_network
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
    io_read_bytes: int | None = None  # block I/O since start, from the cgroup (io.stat / blkio)
    io_write_bytes: int | None = None
    ipv4: list[str] | None = None
    ipv6: list[str] | None = None
    net: dict[str, dict[str, int]] | None = None  # per interface: rx/tx bytes and packets
    lock: str | None = None  # a persisted lock (backup, snapshot, rollback...): state changes are refused
    warnings: list[str] | None = None  # from a start: what it went on without (lxcfs, a post-start hook)
    paused: bool = False  # running but frozen by ``suspend`` (engine.suspend)

    def as_dict(self) -> dict:
        return asdict(self)


class StatusOps:
    """Mixed into :class:`engine.lifecycle.Engine`: reading state, through its :class:`engine.node.Node`."""

    # ---- reading state -------------------------------------------------------------------
    def config(self, ctid: int) -> ContainerConfig:
        return self.node.config(ctid)

    def exists(self, ctid: int) -> bool:
        return self.node.exists(ctid)

    def ids(self) -> list[int]:
        return self.node.ids()

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
        record = self.node.running(ctid)
        status = ContainerStatus(
            ctid,
            config.hostname,
            "running" if record else "stopped",
            unprivileged=config.unprivileged,
            lock=config.current.values.get("lock"),
        )
        if record:
            self._drain_console_quietly(ctid, record)
            status.pid, status.init = record.pid, record.init
            status.paused = self.cgroups.frozen(str(ctid))
            status.uptime = max(0.0, time.time() - record.started_at)
            if stats:
                try:
                    usage = self.cgroups.stats(str(ctid))
                    status.memory_bytes, status.memory_limit_bytes = usage.memory_bytes, usage.memory_limit_bytes
                    status.cpu_ns, status.pids = usage.cpu_ns, usage.pids
                    status.io_read_bytes, status.io_write_bytes = usage.io_read_bytes, usage.io_write_bytes
                except EngineError:
                    pass
                if has_network(config):
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
        record = self.node.running(ctid)
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

    # ---- the Node's answers under the names tests and tools know ------------------------------
    def _rootfs(self, config: ContainerConfig) -> Path:
        """The host directory a start enters: the rootfs itself, or the mount point of an image or overlay."""
        _, driver, vol = self.node.rootfs_volume(config)
        return driver.rootfs(vol)

    def _rootfs_volume(self, config: ContainerConfig):
        return self.node.rootfs_volume(config)

    def _idmap(self, config: ContainerConfig) -> IdMap | None:
        return self.node.idmap_of(config)
