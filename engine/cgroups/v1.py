"""cgroup v1 driver: one directory per container in every mounted hierarchy.

Limits go to the controller hierarchies (memory, cpu, cpuset, pids, blkio,
devices, freezer). On a hybrid host the container also gets a directory in
the controller-less cgroup2 mount: it is only the container's cgroup
namespace view, which a systemd inside needs, and it is delegated to the
container's root when an owner is given.
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
    read_file,
    read_opt_int,
    rmdir_tree,
    wait_until,
    write_file,
)
from engine.errors import HostError, InvalidState, NotSupported

_UNLIMITED_FROM = 1 << 60  # the kernel reports "no limit" as PAGE_COUNTER_MAX * page size
# blkio weight files: (file, min, max, default). CFQ's blkio.weight is gone since 5.0; BFQ's remains.
_IO_WEIGHT = (("blkio.weight", 10, 1000, 500), ("blkio.bfq.weight", 10, 1000, 100))


def io_weight_lack(blkio_root: str | None) -> str:
    """What the host lacks for an I/O weight, in words a node administrator can act on."""
    if blkio_root is None:
        return "it has no v1 'blkio' controller mounted"
    return (
        "its v1 'blkio' controller has neither blkio.weight nor blkio.bfq.weight (weights need the BFQ "
        "I/O scheduler: no disk of this node uses it; see /sys/block/*/queue/scheduler)"
    )


_IO_BYTES = ("blkio.throttle.io_service_bytes_recursive", "blkio.bfq.io_service_bytes_recursive")


class V1Driver(CgroupDriver):
    """Containers on cgroup v1, including the systemd hybrid layout."""

    name = "v1"

    def _roots(self) -> list[str]:
        roots = self.mounts.v1_roots()
        return roots + [self.mounts.unified] if self.mounts.unified else roots

    def _file(self, ctid: str, controller: str, name: str) -> str | None:
        """Path of a controller file of the container, or None if the host lacks it."""
        root = self.mounts.v1.get(controller)
        path = os.path.join(self._dir(root, ctid), name) if root else None
        return path if path and os.path.exists(path) else None

    def _need(self, ctid: str, controller: str, name: str, what: str) -> str:
        path = self._file(ctid, controller, name)
        if path is None:
            raise NotSupported(f"{what} needs the v1 '{controller}' controller file {name}, which this host lacks")
        return path

    def _opt(self, ctid: str, controller: str, name: str, value: object, what: str) -> str | None:
        """The file if present (None if not); NotSupported if ``value`` is set but the file is missing."""
        return self._file(ctid, controller, name) if value is None else self._need(ctid, controller, name, what)

    # -- lifecycle ------------------------------------------------------------
    def _ensure_parent(self, root: str) -> None:
        """Make ``<root>/<parent>``; cpuset dirs start empty and must copy cpus/mems down."""
        path = root
        for part in self.parent.split("/"):
            upper, path = path, os.path.join(path, part)
            make_cgroup(path)
            if root == self.mounts.v1.get("cpuset"):
                self._copy_cpuset(upper, path)

    @staticmethod
    def _copy_cpuset(upper: str, path: str) -> None:
        for name in ("cpuset.cpus", "cpuset.mems"):
            if not read_file(os.path.join(path, name)):
                write_file(os.path.join(path, name), read_file(os.path.join(upper, name)))

    def create(
        self,
        ctid: str,
        owner_uid: int | None = None,
        owner_gid: int | None = None,
        extra_devices: Iterable[DeviceRule] = (),
    ) -> None:
        """Make the container's cgroup in every hierarchy; owner_gid defaults to owner_uid."""
        if self.exists(ctid):
            raise InvalidState(f"container {ctid} already has a cgroup under {self.parent}")
        created: list[str] = []
        try:
            for root in self._roots():
                self._ensure_parent(root)
                path = self._dir(root, ctid)
                make_cgroup(path, exist_ok=False)
                created.append(path)
                if root == self.mounts.v1.get("cpuset"):
                    self._copy_cpuset(os.path.dirname(path), path)
                    write_file(os.path.join(path, "cgroup.clone_children"), 1)  # sub-cgroups get cpus too
            self._setup_devices(ctid, [*DEFAULT_DEVICES, *extra_devices])
            if owner_uid is not None:
                self._delegate(ctid, owner_uid, owner_uid if owner_gid is None else owner_gid)
        except BaseException:
            for path in reversed(created):
                try:
                    rmdir_tree(path)
                except Exception:  # keep the original error; a leftover dir shows up in list()
                    pass
            raise

    def allow_devices(self, ctid: str, extra_devices: Iterable[DeviceRule]) -> None:
        self._require(ctid)
        allow = self._file(ctid, "devices", "devices.allow")
        if allow:
            for rule in extra_devices:
                write_file(allow, rule.v1_line())
        else:
            from engine.cgroups import devices_bpf

            devices_bpf.replace(self._dir(self.mounts.unified, ctid), [*DEFAULT_DEVICES, *extra_devices])

    def _setup_devices(self, ctid: str, rules: list[DeviceRule]) -> None:
        """Deny all, then allow the list; without a v1 devices hierarchy use BPF on the cgroup2 view."""
        deny = self._file(ctid, "devices", "devices.deny")
        if deny:
            write_file(deny, "a")
            allow = os.path.join(os.path.dirname(deny), "devices.allow")
            for rule in rules:
                write_file(allow, rule.v1_line())
        elif self.mounts.unified:
            from engine.cgroups import devices_bpf  # ctypes: loaded only when a container starts

            devices_bpf.attach(self._dir(self.mounts.unified, ctid), rules)
        else:
            raise NotSupported("no 'devices' controller and no cgroup2 mount: cannot restrict device access")

    # -- limits -------------------------------------------------------------
    def apply(self, ctid: str, limits: Limits) -> None:
        """Check every field is supported first, then write; memory and memsw in a valid order."""
        self._require(ctid)
        writes: list[tuple[str, str | int]] = []
        mem = self._opt(ctid, "memory", "memory.limit_in_bytes", limits.memory_mb, "memory_mb")
        memsw = self._opt(
            ctid, "memory", "memory.memsw.limit_in_bytes", limits.swap_mb, "swap_mb (boot with swapaccount=1)"
        )
        if mem:
            new_mem = limits.memory_mb * MiB if limits.memory_mb is not None else -1
            new_sw = new_mem + limits.swap_mb * MiB if limits.swap_mb is not None else -1
            pair: list[tuple[str, str | int]] = [(mem, new_mem)] + ([(memsw, new_sw)] if memsw else [])
            lowering = new_mem != -1 and new_mem < int(read_file(mem))
            writes += pair if lowering else pair[::-1]  # memsw must never drop below memory
        cpus = self._opt(ctid, "cpuset", "cpuset.cpus", limits.cpus, "cpus")
        if cpus:
            upper = os.path.join(os.path.dirname(os.path.dirname(cpus)), "cpuset.cpus")
            writes.append((cpus, limits.cpus if limits.cpus is not None else read_file(upper)))
        quota = self._opt(ctid, "cpu", "cpu.cfs_quota_us", limits.cpulimit or None, "cpulimit")
        if quota:
            writes.append((os.path.join(os.path.dirname(quota), "cpu.cfs_period_us"), CFS_PERIOD_US))
            writes.append((quota, max(1000, round(limits.cpulimit * CFS_PERIOD_US)) if limits.cpulimit else -1))
        shares = self._opt(ctid, "cpu", "cpu.shares", limits.cpuunits, "cpuunits")
        if shares:
            writes.append((shares, 1024 if limits.cpuunits is None else min(max(limits.cpuunits, 2), 262144)))
        pids = self._opt(ctid, "pids", "pids.max", limits.pids, "pids")
        if pids:
            writes.append((pids, "max" if limits.pids is None else limits.pids))
        weights = [(p, lo, hi, d) for f, lo, hi, d in _IO_WEIGHT if (p := self._file(ctid, "blkio", f))]
        if limits.ioweight is not None and not weights:
            lack = io_weight_lack(self.mounts.v1.get("blkio"))
            raise NotSupported(f"ioweight cannot be applied on this host: {lack}")
        for path, lo, hi, default in weights:
            writes.append((path, default if limits.ioweight is None else min(max(limits.ioweight, lo), hi)))
        for path, value in writes:
            write_file(path, value)

    def stats(self, ctid: str) -> Stats:
        """Cheap file reads only. v1 blkio counts I/O only under throttling rules or BFQ on new kernels."""
        self._require(ctid)

        def value(controller: str, name: str) -> int | None:
            path = self._file(ctid, controller, name)
            return read_opt_int(path) if path else None

        cpu, mem = value("cpuacct", "cpuacct.usage"), value("memory", "memory.usage_in_bytes")
        limit, pids = value("memory", "memory.limit_in_bytes"), value("pids", "pids.current")
        read = write = 0
        for name in _IO_BYTES:
            path = self._file(ctid, "blkio", name)
            if path:
                r, w = _blkio_bytes(path)
                read, write = max(read, r), max(write, w)
        return Stats(
            cpu_ns=cpu or 0,
            memory_bytes=mem or 0,
            memory_limit_bytes=limit if limit is not None and limit < _UNLIMITED_FROM else None,
            pids=len(self.procs(ctid)) if pids is None else pids,
            io_read_bytes=read,
            io_write_bytes=write,
        )

    # -- freezer / kill -------------------------------------------------------
    def _set_freezer(self, ctid: str, state: str, timeout: float) -> None:
        path = self._need(ctid, "freezer", "freezer.state", "freeze")
        write_file(path, state)
        if not wait_until(lambda: read_file(path) == state, timeout):
            if state == "FROZEN":
                write_file(path, "THAWED")  # do not leave it half frozen
            raise HostError(f"{path} did not reach {state} within {timeout}s")

    def freeze(self, ctid: str, timeout: float = 10.0) -> None:
        self._require(ctid)
        self._set_freezer(ctid, "FROZEN", timeout)

    def thaw(self, ctid: str, timeout: float = 10.0) -> None:
        self._require(ctid)
        self._set_freezer(ctid, "THAWED", timeout)

    def frozen(self, ctid: str) -> bool:
        path = self._file(ctid, "freezer", "freezer.state")
        return path is not None and read_file(path) != "THAWED"

    def cpuset(self, ctid: str) -> str | None:
        path = self._file(ctid, "cpuset", "cpuset.effective_cpus") or self._file(ctid, "cpuset", "cpuset.cpus")
        if path is None:
            return None
        value = read_file(path)
        if value:
            return value
        # cpuset.cpus of a cgroup v1 child starts empty: the tasks then run where the parent's allow
        return self._cpuset_up(os.path.dirname(path))

    def _cpuset_up(self, directory: str) -> str | None:
        while directory and directory != "/":
            for name in ("cpuset.effective_cpus", "cpuset.cpus"):
                path = os.path.join(directory, name)
                if os.path.exists(path) and read_file(path):
                    return read_file(path)
            directory = os.path.dirname(directory)
        return None

    def kill(self, ctid: str, timeout: float = 5.0) -> None:
        if not self.exists(ctid):
            return
        self._kill_frozen(ctid, timeout, can_freeze=self._file(ctid, "freezer", "freezer.state") is not None)


def _blkio_bytes(path: str) -> tuple[int, int]:
    """Sum the per-device ``MAJ:MIN Read|Write N`` lines of a blkio io_service_bytes file."""
    read = write = 0
    for line in read_file(path).splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].isdigit():
            if parts[1] == "Read":
                read += int(parts[2])
            elif parts[1] == "Write":
                write += int(parts[2])
    return read, write
