"""cgroups for containers: one interface (:class:`CgroupDriver`), a v1 and a v2 driver.

:func:`detect` reads how this host mounts cgroups and returns the driver that
fits. Three layouts exist in the wild:

* pure v2: cgroup2 at /sys/fs/cgroup holding every controller (V2Driver);
* pure v1: one cgroup mount per controller (V1Driver);
* hybrid (systemd's legacy default): v1 controllers plus a cgroup2 mount at
  /sys/fs/cgroup/unified with no controllers. V1Driver does the limits and
  also makes the container a cgroup2 dir there, which becomes the container's
  cgroup namespace root (``ns_path``) for a systemd inside. crun refuses this
  layout; we support it.
"""
from __future__ import annotations

import os
import re

from engine.cgroups.base import (
    DEFAULT_DEVICES,
    FUSE_DEVICE,
    TUN_DEVICE,
    CgroupDriver,
    CgroupMounts,
    DeviceRule,
    Limits,
    Stats,
)
from engine.cgroups.v1 import V1Driver
from engine.cgroups.v2 import V2Driver
from engine.errors import HostError

__all__ = ["CgroupDriver", "CgroupMounts", "DeviceRule", "Limits", "Stats", "V1Driver", "V2Driver",
           "DEFAULT_DEVICES", "FUSE_DEVICE", "TUN_DEVICE", "DRIVERS", "detect", "detect_kind", "read_mounts"]

DRIVERS: dict[str, type[CgroupDriver]] = {"v1": V1Driver, "v2": V2Driver}
CGROUP2_SUPER_MAGIC = 0x63677270
_V1_CONTROLLERS = {"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
                   "net_cls", "net_prio", "perf_event", "hugetlb", "rdma", "misc"}


def _unescape(text: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _known_controllers() -> set[str]:
    known = set(_V1_CONTROLLERS)
    try:
        with open("/proc/cgroups", encoding="utf-8") as fh:
            known |= {ln.split()[0] for ln in fh if ln.strip() and not ln.startswith("#")}
    except OSError:
        pass
    return known


def read_mounts(mountinfo: str = "/proc/self/mountinfo") -> CgroupMounts:
    """Parse mountinfo for cgroup (v1) and cgroup2 mounts: controller -> mount point."""
    try:
        with open(mountinfo, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise HostError(f"cannot read {mountinfo}: {exc.strerror}") from exc
    controllers = _known_controllers()
    v1: dict[str, str] = {}
    unified: dict[bool, list[str]] = {False: [], True: []}
    entries: list[tuple[bool, str, str, str]] = []
    for line in lines:
        pre, sep, post = line.partition(" - ")
        fields, tail = pre.split(), post.split()
        if sep and len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            entries.append((_unescape(fields[3]) != "/", _unescape(fields[4]), tail[0], tail[2]))
    # Mounts of a hierarchy's root win (in mountinfo order); a bind of a sub-cgroup
    # (a nested engine without a cgroup namespace) is used only if nothing else is.
    for sub, point, fstype, options in sorted(entries, key=lambda e: e[0]):
        if fstype == "cgroup2":
            unified[sub].append(point)
        else:
            for opt in options.split(","):
                if opt.startswith("name=") or opt in controllers:
                    v1.setdefault(opt, point)
    found = unified[False] or unified[True]
    best = "/sys/fs/cgroup" if "/sys/fs/cgroup" in found else (found[0] if found else None)
    return CgroupMounts(v1=v1, unified=best)


def fs_magic(path: str) -> int | None:
    """statfs(2) f_type of ``path`` (os.statvfs does not expose it); None if unavailable."""
    import ctypes
    import platform

    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit; f_type comes first
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.statfs(ctypes.c_char_p(os.fsencode(path)), buf) != 0:
        return None
    ftype = ctypes.c_uint if platform.machine() == "s390x" else ctypes.c_long
    return ftype.from_buffer(buf).value & 0xFFFFFFFF


def _unified_controllers(mounts: CgroupMounts) -> set[str]:
    if not mounts.unified:
        return set()
    try:
        with open(os.path.join(mounts.unified, "cgroup.controllers"), encoding="utf-8") as fh:
            return set(fh.read().split())
    except OSError:
        return set()


def detect_kind(mounts: CgroupMounts, root_magic: int | None) -> str:
    """"v2" when the cgroup2 mount holds the controllers, else "v1" (pure v1 or hybrid)."""
    if root_magic == CGROUP2_SUPER_MAGIC:
        return "v2"
    if mounts.unified and "memory" in _unified_controllers(mounts):
        return "v2"
    if any(not key.startswith("name=") for key in mounts.v1):
        return "v1"
    if mounts.unified:
        return "v2"
    raise HostError("no cgroup hierarchy is mounted (found neither cgroup nor cgroup2 in /proc/self/mountinfo)")


def detect(parent: str = "caisson", mounts: CgroupMounts | None = None) -> CgroupDriver:
    """The driver for this host; all its container cgroups live under ``<root>/<parent>``."""
    mounts = mounts if mounts is not None else read_mounts()
    # mountinfo already says what is mounted at /sys/fs/cgroup: no statfs (and no ctypes) needed.
    root_magic = CGROUP2_SUPER_MAGIC if mounts.unified == "/sys/fs/cgroup" else None
    kind = detect_kind(mounts, root_magic)
    return DRIVERS[kind](parent, mounts=mounts)
