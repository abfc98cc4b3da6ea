"""Host tuning for a container node: cgroup moves without an RCU grace period (``favordynmods``).

Every start moves its first process into the container's cgroups and every ``exec``/``enter`` moves its
process in too. By default the kernel guards such moves with one global per-CPU rwsem whose writer
waits for an RCU grace period when it has been quiet a while: 7 to 11 ms on a 2-CPU host, the largest
single step of a warm start. The cgroup2 mount option ``favordynmods`` (Linux 6.0+) trades that wait
for slightly dearer forks and exits ("reduce the latencies of dynamic cgroup modifications such as
task migrations", the kernel's cgroup-v2 documentation), the trade a host that starts containers and
runs commands in them wants. The switch is global: turning it on on the cgroup2 mount makes moves in
the v1 hierarchies of a hybrid host fast as well. Recent kernels keep it on once set ("can't be
disabled"), so the node agent turns it on only when ``CAISSON_CGROUP_FAVORDYNMODS`` is not ``0``.

The remount keeps every option the mount has (``nsdelegate``, ``memory_recursiveprot`` ...): a cgroup2
remount sets exactly the options it is given.
"""

from __future__ import annotations

import ctypes
import os

from engine.cgroups.mounts import _unescape

OPTION = "favordynmods"
SETTING = "CAISSON_CGROUP_FAVORDYNMODS"  # "0": leave the host's cgroup2 mount as it is
MS_REMOUNT = 0x20
# Per-mount flags shown among the super options too; a cgroup2 remount takes only its own options.
_GENERIC = {"rw", "ro"}


def wanted() -> bool:
    """Whether this node turns the option on (the node's setting, on unless ``0``)."""
    return os.environ.get(SETTING, "1") != "0"


def cgroup2_mount(mountinfo: str = "/proc/self/mountinfo") -> tuple[str, list[str]] | None:
    """The host's cgroup2 root mount and its super options, or None on a host without one."""
    with open(mountinfo, encoding="utf-8") as fh:
        for line in fh:
            pre, sep, post = line.partition(" - ")
            fields, tail = pre.split(), post.split()
            if sep and len(fields) >= 5 and len(tail) >= 3 and tail[0] == "cgroup2" and fields[3] == "/":
                return _unescape(fields[4]), tail[2].split(",")
    return None


def favor_dynamic_moves(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """Turn ``favordynmods`` on at the cgroup2 mount; return the mount point when this call turned it on,
    None when it already was on. Raises OSError: no cgroup2 mount, a kernel without the option, or one that
    ignored it (outside the host's cgroup namespace it does)."""
    found = cgroup2_mount(mountinfo)
    if found is None:
        raise OSError("this host has no cgroup2 mount")
    point, options = found
    if OPTION in options:
        return None
    data = ",".join([*(opt for opt in options if opt not in _GENERIC), OPTION]).encode()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"cgroup2", os.fsencode(point), b"cgroup2", MS_REMOUNT, data) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"remount {point} with {OPTION}: {os.strerror(errno)}")
    after = cgroup2_mount(mountinfo)
    if after is None or OPTION not in after[1]:  # the kernel sets it only from the host's cgroup namespace
        raise OSError(f"the kernel ignored {OPTION} on {point} (not in the host's cgroup namespace?)")
    return point
