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
from engine.cgroups.mounts import read_mounts
from engine.cgroups.v1 import V1Driver
from engine.cgroups.v2 import V2Driver
from engine.errors import HostError

__all__ = [
    "CgroupDriver",
    "CgroupMounts",
    "DeviceRule",
    "Limits",
    "Stats",
    "V1Driver",
    "V2Driver",
    "DEFAULT_DEVICES",
    "FUSE_DEVICE",
    "TUN_DEVICE",
    "DRIVERS",
    "detect",
    "detect_kind",
    "read_mounts",
]

DRIVERS: dict[str, type[CgroupDriver]] = {"v1": V1Driver, "v2": V2Driver}
CGROUP2_SUPER_MAGIC = 0x63677270


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
    """ "v2" when the cgroup2 mount holds the controllers, else "v1" (pure v1 or hybrid)."""
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
