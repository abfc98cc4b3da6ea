"""cgroup v2 driver: one directory per container in the unified hierarchy.

The container's processes and its limits share ``<root>/<parent>/<ctid>``: a
systemd inside moves itself into init.scope before enabling controllers, which
keeps the no-internal-process rule. Controllers are enabled top-down in
cgroup.subtree_control (only those the kernel offers in cgroup.controllers).
Device access is a BPF program (devices_bpf) since v2 has no devices files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from engine.cgroups.base import (
    CFS_PERIOD_US,
    DEFAULT_DEVICES,
    CgroupDriver,
    DeviceRule,
    Limits,
    MiB,
    Stats,
    make_cgroup,
    os_error,
    read_file,
    read_opt_int,
    rmdir_tree,
    wait_until,
    write_file,
)
from engine.errors import EngineError, HostError, InvalidState, NotSupported

# Controllers a container needs; each is enabled only if the kernel offers it.
NEEDED = ("cpuset", "cpu", "io", "memory", "pids")
# io weight files: (file, min, max, default); io.weight is blk-iocost, io.bfq.weight is BFQ.
_IO_WEIGHT = (("io.weight", 1, 10000, 100), ("io.bfq.weight", 1, 1000, 100))


def read_keyed(path: str) -> dict[str, int]:
    """A flat ``key value`` file (cpu.stat, cgroup.events); empty if absent."""
    try:
        with open(path, encoding="utf-8") as fh:
            pairs = (line.split() for line in fh)
            return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].lstrip("-").isdigit()}
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise os_error(exc, f"cannot read {path}") from exc


class V2Driver(CgroupDriver):
    """Containers on the unified (cgroup2) hierarchy."""

    name = "v2"

    def _roots(self) -> list[str]:
        if not self.mounts.unified:
            raise NotSupported("no cgroup2 mount found in /proc/self/mountinfo")
        return [self.mounts.unified]

    def _path(self, ctid: str, name: str = "") -> str:
        return os.path.join(self._dir(self._roots()[0], ctid), name)

    def _need(self, ctid: str, name: str, what: str, controller: str | None = None) -> str:
        """A controller file of the container; NotSupported naming the controller if absent."""
        path = self._path(ctid, name)
        if not os.path.exists(path):
            controller = controller or name.split(".")[0]
            offered = read_file(os.path.join(os.path.dirname(path), "cgroup.controllers"))
            raise NotSupported(
                f"{what} needs the cgroup2 '{controller}' controller ({name}), which is not "
                f"available here (enabled for this cgroup: {offered or 'none'})"
            )
        return path

    def _opt(self, ctid: str, name: str, value: object, what: str) -> str | None:
        """The file if present (None if not); NotSupported if ``value`` is set but the file is missing."""
        if value is not None:
            return self._need(ctid, name, what)
        path = self._path(ctid, name)
        return path if os.path.exists(path) else None

    # -- lifecycle ------------------------------------------------------------
    def _ensure_parent(self) -> None:
        """Make ``<root>/<parent>`` and enable NEEDED controllers from the root down to it."""
        path = self._roots()[0]
        for part in [None, *self.parent.split("/")]:
            if part:
                path = os.path.join(path, part)
                make_cgroup(path)
            offered = read_file(os.path.join(path, "cgroup.controllers")).split()
            enabled = read_file(os.path.join(path, "cgroup.subtree_control")).split()
            for name in NEEDED:
                if name in offered and name not in enabled:
                    try:
                        write_file(os.path.join(path, "cgroup.subtree_control"), f"+{name}")
                    except EngineError:
                        pass  # e.g. busy: apply() then reports the controller as missing

    def create(
        self,
        ctid: str,
        owner_uid: int | None = None,
        owner_gid: int | None = None,
        extra_devices: Iterable[DeviceRule] = (),
    ) -> None:
        """Make the container's cgroup with its device filter; owner_gid defaults to owner_uid."""
        if self.exists(ctid):
            raise InvalidState(f"container {ctid} already has a cgroup under {self.parent}")
        self._ensure_parent()
        path = self._path(ctid)
        make_cgroup(path, exist_ok=False)
        from engine.cgroups import devices_bpf  # ctypes: loaded only when a container starts

        try:
            devices_bpf.attach(path, [*DEFAULT_DEVICES, *extra_devices])
            if owner_uid is not None:
                self._delegate(ctid, owner_uid, owner_uid if owner_gid is None else owner_gid)
        except BaseException:
            try:
                rmdir_tree(path)
            except Exception:  # keep the original error; a leftover dir shows up in list()
                pass
            raise

    def allow_devices(self, ctid: str, extra_devices: Iterable[DeviceRule]) -> None:
        self._require(ctid)
        from engine.cgroups import devices_bpf

        devices_bpf.replace(self._path(ctid), [*DEFAULT_DEVICES, *extra_devices])

    # -- limits -------------------------------------------------------------
    def apply(self, ctid: str, limits: Limits) -> None:
        """Check every field is supported first, then write; None resets to unlimited/default."""
        self._require(ctid)
        writes: list[tuple[str, str | int]] = []
        mem = self._opt(ctid, "memory.max", limits.memory_mb, "memory_mb")
        if mem:
            writes.append((mem, "max" if limits.memory_mb is None else limits.memory_mb * MiB))
        swap = self._opt(ctid, "memory.swap.max", limits.swap_mb, "swap_mb")
        if swap:
            writes.append((swap, "max" if limits.swap_mb is None else limits.swap_mb * MiB))
        cpus = self._opt(ctid, "cpuset.cpus", limits.cpus, "cpus")
        if cpus:
            writes.append((cpus, limits.cpus or "\n"))  # empty = inherit the parent's CPUs
        quota = self._opt(ctid, "cpu.max", limits.cpulimit or None, "cpulimit")
        if quota:
            value = max(1000, round(limits.cpulimit * CFS_PERIOD_US)) if limits.cpulimit else "max"
            writes.append((quota, f"{value} {CFS_PERIOD_US}"))
        weight = self._opt(ctid, "cpu.weight", limits.cpuunits, "cpuunits")
        if weight:
            writes.append((weight, 100 if limits.cpuunits is None else min(max(limits.cpuunits, 1), 10000)))
        pids = self._opt(ctid, "pids.max", limits.pids, "pids")
        if pids:
            writes.append((pids, "max" if limits.pids is None else limits.pids))
        weights = [(p, lo, hi, d) for f, lo, hi, d in _IO_WEIGHT if os.path.exists(p := self._path(ctid, f))]
        if limits.ioweight is not None and not weights:
            self._need(ctid, "io.max", "ioweight", controller="io")  # no 'io' controller at all: named as such
            raise NotSupported(
                "ioweight cannot be applied on this host: its cgroup2 'io' controller has neither "
                "io.weight (blk-iocost) nor io.bfq.weight (the BFQ I/O scheduler; no disk of this "
                "node uses it, see /sys/block/*/queue/scheduler)"
            )
        for path, lo, hi, default in weights:
            writes.append((path, default if limits.ioweight is None else min(max(limits.ioweight, lo), hi)))
        for path, value in writes:
            write_file(path, value)

    def stats(self, ctid: str) -> Stats:
        """Cheap file reads only; counters of absent controllers read as 0."""
        self._require(ctid)
        cpu = read_keyed(self._path(ctid, "cpu.stat")).get("usage_usec", 0) * 1000
        mem = read_opt_int(self._path(ctid, "memory.current"))
        limit = None
        if os.path.exists(self._path(ctid, "memory.max")):
            raw = read_file(self._path(ctid, "memory.max"))
            limit = int(raw) if raw.isdigit() else None
        pids = read_opt_int(self._path(ctid, "pids.current"))
        read = write = 0
        if os.path.exists(self._path(ctid, "io.stat")):
            for line in read_file(self._path(ctid, "io.stat")).splitlines():
                fields = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
                read += int(fields.get("rbytes", 0))
                write += int(fields.get("wbytes", 0))
        return Stats(
            cpu_ns=cpu,
            memory_bytes=mem or 0,
            memory_limit_bytes=limit,
            pids=len(self.procs(ctid)) if pids is None else pids,
            io_read_bytes=read,
            io_write_bytes=write,
        )

    # -- freezer / kill -------------------------------------------------------
    def _set_frozen(self, ctid: str, frozen: int, timeout: float) -> None:
        self._require(ctid)
        path = self._need(ctid, "cgroup.freeze", "freeze (Linux 5.2+)", controller="freezer")
        events = self._path(ctid, "cgroup.events")
        write_file(path, frozen)
        if not wait_until(lambda: read_keyed(events).get("frozen") == frozen, timeout):
            if frozen:
                write_file(path, 0)  # do not leave it half frozen
            raise HostError(f"{events} did not report frozen={frozen} within {timeout}s")

    def freeze(self, ctid: str, timeout: float = 10.0) -> None:
        self._set_frozen(ctid, 1, timeout)

    def thaw(self, ctid: str, timeout: float = 10.0) -> None:
        self._set_frozen(ctid, 0, timeout)

    def frozen(self, ctid: str) -> bool:
        events = self._path(ctid, "cgroup.events")
        return os.path.exists(events) and read_keyed(events).get("frozen") == 1

    def cpuset(self, ctid: str) -> str | None:
        path = self._path(ctid, "cpuset.cpus.effective")
        return read_file(path) if os.path.exists(path) else None

    def kill(self, ctid: str, timeout: float = 5.0) -> None:
        """cgroup.kill (Linux 5.14+) kills the whole subtree at once; older kernels freeze and kill."""
        if not self.exists(ctid):
            return
        kill = self._path(ctid, "cgroup.kill")
        if not os.path.exists(kill):
            self._kill_frozen(ctid, timeout, can_freeze=os.path.exists(self._path(ctid, "cgroup.freeze")))
            return
        write_file(kill, 1)
        events = self._path(ctid, "cgroup.events")
        if not wait_until(lambda: read_keyed(events).get("populated") == 0, timeout):
            raise HostError(f"container {ctid}: processes {self.procs(ctid)[:10]} survived cgroup.kill for {timeout}s")
