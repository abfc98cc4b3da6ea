"""The cgroup driver interface and the pieces both drivers share.

A container's cgroups live at ``<hierarchy root>/<parent>/<ctid>`` in every
hierarchy a driver uses. The engine talks to :class:`CgroupDriver` only, so the
same start code runs on pure cgroup v2 hosts, pure v1 hosts and the systemd
"hybrid" layout (v1 controllers plus a controller-less cgroup2 mount).
"""

from __future__ import annotations

import errno
import os
import re
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from engine.cgroups.mounts import CgroupMounts, read_mounts
from engine.errors import EngineError, HostError, InvalidState, NotFound, ValidationError

MiB = 1024 * 1024
CFS_PERIOD_US = 100_000
# Leaf used to join a cgroup2 dir whose subtree has controllers enabled (the
# no-internal-process rule forbids processes next to such sub-cgroups).
EXEC_LEAF = ".caisson"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_CPUS = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")


@dataclass(frozen=True)
class Limits:
    """Resource limits; a None field means unlimited / the kernel default."""

    memory_mb: int | None = None
    swap_mb: int | None = None
    cpus: str | None = None
    cpulimit: float | None = None
    cpuunits: int | None = None
    pids: int | None = None
    ioweight: int | None = None

    def __post_init__(self) -> None:
        for key, low in (("memory_mb", 1), ("swap_mb", 0), ("cpuunits", 0), ("pids", 1), ("ioweight", 0)):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise ValidationError(f"{key} must be an integer >= {low}, got {value!r}", key=key)
        if self.cpulimit is not None and (
            isinstance(self.cpulimit, bool)
            or not isinstance(self.cpulimit, (int, float))
            or not 0 <= self.cpulimit < 1e6
        ):
            raise ValidationError(f"cpulimit must be a number >= 0, got {self.cpulimit!r}", key="cpulimit")
        if self.cpus is not None and not _CPUS.fullmatch(self.cpus):
            raise ValidationError(f"cpus must be a CPU list like '0-1,3', got {self.cpus!r}", key="cpus")
        if self.swap_mb is not None and self.memory_mb is None:
            raise ValidationError("swap_mb needs memory_mb (swap is counted on top of memory)", key="swap_mb")


@dataclass(frozen=True)
class Stats:
    """Counters of one container: memory_bytes is the kernel's usage (page cache included),
    memory_limit_bytes is None when unlimited, counters of absent controllers are 0."""

    cpu_ns: int
    memory_bytes: int
    memory_limit_bytes: int | None
    pids: int
    io_read_bytes: int
    io_write_bytes: int


@dataclass(frozen=True)
class DeviceRule:
    """One allow rule: kind "c" or "b", major/minor None meaning any ("*")."""

    kind: str
    major: int | None
    minor: int | None
    access: str = "rwm"

    def __post_init__(self) -> None:
        if self.kind not in ("c", "b"):
            raise ValidationError(f"device kind must be 'c' or 'b', got {self.kind!r}")
        if not self.access or set(self.access) - set("rwm"):
            raise ValidationError(f"device access must be a subset of 'rwm', got {self.access!r}")

    def v1_line(self) -> str:
        """The line for a v1 devices.allow file, e.g. ``c 136:* rwm``."""
        major = "*" if self.major is None else self.major
        minor = "*" if self.minor is None else self.minor
        return f"{self.kind} {major}:{minor} {self.access}"


# LXC's default allow-list: everything else is denied.
DEFAULT_DEVICES: tuple[DeviceRule, ...] = (
    DeviceRule("c", None, None, "m"),  # mknod of any char device (opening still needs a rule)
    DeviceRule("b", None, None, "m"),  # mknod of any block device
    DeviceRule("c", 1, 3),  # null
    DeviceRule("c", 1, 5),  # zero
    DeviceRule("c", 1, 7),  # full
    DeviceRule("c", 1, 8),  # random
    DeviceRule("c", 1, 9),  # urandom
    DeviceRule("c", 5, 0),  # tty
    DeviceRule("c", 5, 1),  # console
    DeviceRule("c", 5, 2),  # ptmx
    DeviceRule("c", 136, None),  # pts/*
)
FUSE_DEVICE = DeviceRule("c", 10, 229)
TUN_DEVICE = DeviceRule("c", 10, 200)


def validate_id(value: str, what: str = "container ID") -> str:
    """Reject names that could escape the parent dir or clash with cgroup files."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ValidationError(f"invalid {what} {value!r}: use letters, digits, '_', '.', '-' (max 64)")
    return value


def os_error(exc: OSError, what: str) -> EngineError:
    """Map an OSError on a cgroup file to the engine's exception, keeping the path in the message."""
    msg = f"{what}: {exc.strerror or exc}"
    if exc.errno in (errno.EINVAL, errno.ERANGE, errno.EOVERFLOW):
        return ValidationError(msg)
    if exc.errno in (errno.EBUSY, errno.EEXIST):
        return InvalidState(msg)
    if exc.errno in (errno.ENOENT, errno.ESRCH):
        return NotFound(msg)
    return HostError(msg)


def write_file(path: str, value: str | int) -> None:
    """One write() per value: cgroup files treat each write as one command."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise os_error(exc, f"cannot open {path}") from exc
    try:
        os.write(fd, str(value).encode())
    except OSError as exc:
        raise os_error(exc, f"cannot write {str(value)!r} to {path}") from exc
    finally:
        os.close(fd)


def read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError as exc:
        raise os_error(exc, f"cannot read {path}") from exc


def read_opt_int(path: str) -> int | None:
    """An integer file, or None when the file does not exist (controller absent)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return int(fh.read().split()[0])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, IndexError) as exc:
        raise HostError(f"cannot read an integer from {path}: {exc}") from exc


def procs_tree(top: str) -> set[int]:
    """PIDs in cgroup.procs of ``top`` and every sub-cgroup (dirs may vanish meanwhile)."""
    pids: set[int] = set()
    for dirpath, _dirs, _files in os.walk(top):
        try:
            with open(os.path.join(dirpath, "cgroup.procs"), encoding="utf-8") as fh:
                pids.update(int(x) for x in fh.read().split())
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise os_error(exc, f"cannot read {dirpath}/cgroup.procs") from exc
    return pids


def make_cgroup(path: str, exist_ok: bool = True) -> None:
    """mkdir a cgroup directory, with an error that names it."""
    try:
        os.mkdir(path)
    except OSError as exc:
        if isinstance(exc, FileExistsError) and exist_ok:
            return
        raise os_error(exc, f"cannot create cgroup {path}") from exc


def rmdir_tree(top: str) -> None:
    """Remove a cgroup and its sub-cgroups deepest first (cgroupfs only allows rmdir)."""
    for dirpath, _dirs, _files in os.walk(top, topdown=False):
        try:
            os.rmdir(dirpath)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise os_error(exc, f"cannot remove cgroup {dirpath}") from exc


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    """Poll ``check`` until it is true or ``timeout`` seconds passed; returns the last result."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            return check()
        time.sleep(interval)
    return True


def delegate_files() -> list[str]:
    """Files a cgroup2 delegatee must own; recent kernels publish the list."""
    try:
        with open("/sys/kernel/cgroup/delegate", encoding="utf-8") as fh:
            names = fh.read().split()
    except OSError:
        names = []
    return list(dict.fromkeys(["cgroup.procs", "cgroup.subtree_control", "cgroup.threads", *names]))


class CgroupDriver(ABC):
    """Everything the engine does with cgroups; see ``engine.cgroups.detect``."""

    name: str = ""

    def __init__(self, parent: str = "caisson", mounts: CgroupMounts | None = None) -> None:
        for part in parent.split("/"):
            validate_id(part, "cgroup parent")
        self.parent = parent
        if mounts is None:
            mounts = read_mounts()
        self.mounts = mounts

    # -- what differs between v1 and v2 -----------------------------------
    @abstractmethod
    def _roots(self) -> list[str]:
        """Mount points of every hierarchy the container has a directory in."""

    @abstractmethod
    def create(
        self,
        ctid: str,
        owner_uid: int | None = None,
        owner_gid: int | None = None,
        extra_devices: Iterable[DeviceRule] = (),
    ) -> None:
        """Make the cgroups with the device allow-list (DEFAULT_DEVICES + extra); InvalidState if present.

        With owner_uid the cgroup2 view (and a v1 name=systemd dir) is chowned so a
        systemd in a user namespace can make sub-cgroups. A failure removes what was made.
        """

    def allow_devices(self, ctid: str, extra_devices: Iterable[DeviceRule]) -> None:
        """Widen a running container's allow-list to DEFAULT_DEVICES + ``extra_devices`` (hot-plug)."""
        raise NotImplementedError

    @abstractmethod
    def apply(self, ctid: str, limits: Limits) -> None:
        """Set every limit, live; None resets; NotSupported names a controller the host lacks."""

    @abstractmethod
    def stats(self, ctid: str) -> Stats:
        """Current counters; file reads only, it runs on every status poll."""

    @abstractmethod
    def freeze(self, ctid: str, timeout: float = 10.0) -> None:
        """Freeze and wait until the kernel reports it frozen (HostError after timeout)."""

    @abstractmethod
    def thaw(self, ctid: str, timeout: float = 10.0) -> None:
        """Thaw and wait until the kernel reports it thawed."""

    def cpuset(self, ctid: str) -> str | None:
        """The CPUs the container may run on (``0-3,6``), as the kernel applies them; None without cpuset."""
        return None

    @abstractmethod
    def frozen(self, ctid: str) -> bool:
        """Whether the cgroup is frozen (or freezing: a suspended container); False when it does not exist."""

    @abstractmethod
    def kill(self, ctid: str, timeout: float = 5.0) -> None:
        """SIGKILL everything in the cgroup (sub-cgroups too) and wait until it is empty."""

    # -- shared -------------------------------------------------------------
    def _dir(self, root: str, ctid: str) -> str:
        return os.path.join(root, self.parent, validate_id(ctid))

    def _require(self, ctid: str) -> None:
        if not self.exists(ctid):
            raise NotFound(f"container {ctid} has no cgroup under {self.parent}")

    def exists(self, ctid: str) -> bool:
        return any(os.path.isdir(self._dir(root, ctid)) for root in self._roots())

    def list(self) -> list[str]:
        """IDs that have a cgroup under the parent, to rediscover containers after a crash."""
        found: set[str] = set()
        for root in self._roots():
            try:
                names = os.listdir(os.path.join(root, self.parent))
            except FileNotFoundError:
                continue
            found.update(n for n in names if _ID.fullmatch(n) and os.path.isdir(os.path.join(root, self.parent, n)))
        return sorted(found)

    def procs(self, ctid: str) -> list[int]:
        """PIDs in the container's cgroups, sub-cgroups included, across all hierarchies."""
        pids: set[int] = set()
        for root in self._roots():
            pids |= procs_tree(self._dir(root, ctid))
        return sorted(pids)

    def ns_path(self, ctid: str) -> str | None:
        """The cgroup2 dir the container sees as its cgroup namespace root (None without cgroup2)."""
        unified = self.mounts.unified
        return self._dir(unified, ctid) if unified and unified in self._roots() else None

    def procs_file(self, ctid: str) -> list[str]:
        """cgroup.procs of every hierarchy; on cgroup2 a leaf when the container enabled controllers."""
        self._require(ctid)
        files = []
        for root in self._roots():
            path = self._dir(root, ctid)
            if root == self.mounts.unified and read_file(os.path.join(path, "cgroup.subtree_control")):
                path = os.path.join(path, EXEC_LEAF)
                make_cgroup(path)
            files.append(os.path.join(path, "cgroup.procs"))
        return files

    def attach(self, ctid: str, pid: int) -> None:
        """Move ``pid`` (all its threads) into every hierarchy of the container."""
        for path in self.procs_file(ctid):
            write_file(path, pid)

    def destroy(self, ctid: str) -> None:
        """rmdir deepest first in every hierarchy; InvalidState while processes remain; no-op if absent."""
        if not self.exists(ctid):
            return
        left = self.procs(ctid)
        if left:
            raise InvalidState(f"container {ctid} still has processes in its cgroup: {left[:10]}")
        for root in self._roots():
            rmdir_tree(self._dir(root, ctid))

    def _delegate(self, ctid: str, uid: int, gid: int) -> None:
        """Let the container's root (a mapped uid) manage its cgroup2 view and name=systemd dir."""
        targets: list[tuple[str, list[str]]] = []
        if self.mounts.unified and self.mounts.unified in self._roots():
            targets.append((self._dir(self.mounts.unified, ctid), delegate_files()))
        systemd = self.mounts.v1.get("name=systemd")
        if systemd and systemd in self._roots():
            targets.append((self._dir(systemd, ctid), ["cgroup.procs", "tasks"]))
        for top, names in targets:
            for path in [top, *(os.path.join(top, n) for n in names)]:
                try:
                    os.chown(path, uid, gid)
                except OSError as exc:  # optional files (memory.reclaim, tasks...) may be absent
                    if exc.errno != errno.ENOENT or path == top or path.endswith(("/cgroup.procs", "_control")):
                        raise os_error(exc, f"cannot chown {path} to {uid}:{gid}") from exc

    def delegate_subtree(self, ctid: str, uid: int, gid: int) -> None:
        """Nesting: the container's directory in every v1 hierarchy is its root's too (it makes and fills
        sub-cgroups there; the limit files of its own cgroup stay the host's)."""
        for root in self.mounts.v1_roots():
            if root not in self._roots():
                continue
            top = self._dir(root, ctid)
            for path in [top, *(os.path.join(top, n) for n in ("tasks", "cgroup.procs", "cgroup.clone_children"))]:
                try:
                    os.chown(path, uid, gid)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise os_error(exc, f"cannot chown {path} to {uid}:{gid}") from exc

    def _kill_frozen(self, ctid: str, timeout: float, can_freeze: bool) -> None:
        """Freeze (so nothing forks or exits under us), SIGKILL every pid, thaw; repeat until empty."""
        deadline = time.monotonic() + timeout
        while self.procs(ctid):
            left = deadline - time.monotonic()
            if left <= 0:
                raise HostError(f"container {ctid}: processes {self.procs(ctid)[:10]} survived SIGKILL for {timeout}s")
            frozen = False
            if can_freeze:
                try:
                    self.freeze(ctid, timeout=min(left, 1.0))
                    frozen = True
                except HostError:
                    pass  # stuck freezing (D state): kill anyway
            for pid in self.procs(ctid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if frozen:
                self.thaw(ctid)
            wait_until(lambda: not self.procs(ctid), min(max(left, 0.01), 0.5))
