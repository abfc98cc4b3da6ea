"""Which init a rootfs boots, and the signal that asks it to power off.

Each init listens for a different signal (LXC's ``lxc.signal.halt``):
busybox init powers off on SIGUSR2, systemd on SIGRTMIN+4, sysvinit on
SIGPWR (with a ``powerfail`` line in inittab, which the engine makes sure of
at start, as Proxmox's distro setup does).
"""

from __future__ import annotations

import os
import signal
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class InitSystem:
    name: str
    poweroff_signal: int


BUSYBOX = InitSystem("busybox", signal.SIGUSR2)
SYSTEMD = InitSystem("systemd", signal.SIGRTMIN + 4)
SYSVINIT = InitSystem("sysvinit", signal.SIGPWR)
OPENRC = InitSystem("openrc", signal.SIGPWR)
# An application container's PID 1 (engine.oci.launch): stopped by its image's StopSignal (lxc.signal.halt).
APP = InitSystem("app", signal.SIGTERM)
BY_NAME = {i.name: i for i in (BUSYBOX, SYSTEMD, SYSVINIT, OPENRC, APP)}

INIT_PATH = "sbin/init"


def _resolve_inside(rootfs: Path, relpath: str, depth: int = 0) -> tuple[str, os.stat_result] | None:
    """Follow symlinks as the container would see them (absolute links relative to its root)."""
    if depth > 16:
        return None
    path = rootfs / relpath
    try:
        st = path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(path)
        base = "" if target.startswith("/") else os.path.dirname(relpath)
        joined = os.path.normpath(os.path.join("/", base, target)).lstrip("/")
        return _resolve_inside(rootfs, joined, depth + 1)
    return relpath, st


def detect(rootfs: Path) -> InitSystem | None:
    """Guess the init system from what ``/sbin/init`` resolves to inside the rootfs; None if there is none."""
    resolved = _resolve_inside(rootfs, INIT_PATH)
    if resolved is None or not stat.S_ISREG(resolved[1].st_mode):
        return None
    name = os.path.basename(resolved[0])
    if name == "busybox":
        return BUSYBOX
    if "systemd" in name:
        return SYSTEMD
    if (rootfs / "sbin/openrc").exists():
        return OPENRC
    return SYSVINIT
