"""lxcfs: /proc and /sys files that show a container its own limits (``free``, ``top``, ``uptime``, ``nproc``).

One lxcfs (Debian's package, the one Proxmox and LXD use) serves the whole
node at a fixed mount point (``/var/lib/lxcfs``, ``CAISSON_LXCFS`` to move
it).  It answers each read for the cgroups of the process that reads, so its
files need only be bound over the container's: a start binds
``/proc/{meminfo,cpuinfo,stat,uptime,loadavg,diskstats,swaps}`` and
``/sys/devices/system/cpu`` (as host root, before the tree is locked: container
root cannot unmount them).  The values follow ``set`` live, since lxcfs reads
the cgroup files at each read.

``python -m engine lxcfs`` (run by ``scripts/run.sh`` and the node agent)
starts it when it is not serving.  A start never waits for it: a container
started while lxcfs is absent runs with the kernel's own files and the start
says so (a warning in its output and the job's log).  A running container
whose lxcfs died reads errors (ENOTCONN) from the bound files until it is
restarted, as under LXC.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from engine import syscalls as sc
from engine.errors import HostError, NotSupported
from engine.rootfs import Mount

DEFAULT_MOUNTPOINT = "/var/lib/lxcfs"
PROC_FILES = ("meminfo", "cpuinfo", "stat", "uptime", "loadavg", "diskstats", "swaps")
SYS_CPU = "sys/devices/system/cpu"
# -l: load averages per container; --enable-cfs: cpuinfo and stat show the CPUs a quota (cpulimit) gives.
OPTIONS = ("-f", "-l", "--enable-cfs")


def mountpoint() -> Path:
    return Path(os.environ.get("CAISSON_LXCFS", DEFAULT_MOUNTPOINT))


def mounted(path: Path) -> bool:
    """Whether an lxcfs file system is mounted at ``path`` (it may still be dead: see :func:`serving`)."""
    target = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as handle:
            for line in handle:
                fields = line.split()
                sep = fields.index("-")
                if fields[4] == target and fields[sep + 1] == "fuse.lxcfs":
                    return True
    except OSError:
        pass
    return False


def serving(path: Path | None = None) -> bool:
    """Whether lxcfs is mounted at ``path`` and answers (a dead daemon's mount answers ENOTCONN)."""
    path = path or mountpoint()
    if not mounted(path):
        return False
    try:
        with open(path / "proc" / "uptime", "rb") as handle:
            return bool(handle.read(64))
    except OSError:
        return False


def ensure(path: Path | None = None, binary: str = "lxcfs", log: Path | None = None, timeout: float = 10.0) -> int:
    """Start lxcfs at ``path`` unless one serves there; returns its pid (0 when one already served).

    A stale mount of a dead lxcfs is detached first.  It runs in a session of its own, so it outlives
    the caller, as the node's other daemons do.
    """
    path = path or mountpoint()
    if serving(path):
        return 0
    if mounted(path):
        sc.umount(str(path), sc.MNT_DETACH)
    path.mkdir(parents=True, exist_ok=True)
    pidfile = f"/run/lxcfs-{str(path).strip('/').replace('/', '-')}.pid"
    if log:
        log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(
            [binary, *OPTIONS, "-p", pidfile, str(path)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise NotSupported(f"{binary} is not installed (Debian package 'lxcfs')") from None
    finally:
        if log:
            out.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if serving(path):
            return proc.pid
        if proc.poll() is not None:
            raise HostError(f"lxcfs exited with code {proc.returncode} before serving {path}")
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise HostError(f"lxcfs did not serve {path} within {timeout:g} s")


def mounts(path: Path | None = None, source: Path | None = None) -> list[Mount]:
    """The binds of lxcfs's files over the container's; ``source`` is where the bind reads them (``path``,
    or, for binds made after pivot_root, the lxcfs tree's place inside the container)."""
    path = path or mountpoint()
    source = source or path
    result = []
    for name in PROC_FILES:
        if (path / "proc" / name).exists():
            result.append(
                Mount(f"proc/{name}", None, str(source / "proc" / name), sc.MS_BIND, kind="file", optional=True)
            )
    if (path / SYS_CPU).is_dir():
        result.append(Mount(SYS_CPU, None, str(source / SYS_CPU), sc.MS_BIND | sc.MS_REC, optional=True))
    return result


INSIDE = Path("/dev/.lxcfs")  # with nesting: lxcfs's tree bound here by host root, its files by container root


def start_mounts(warn, nesting: bool = False) -> tuple[list[Mount], list[Mount]]:
    """The start's ``lxcfs`` step: (binds made by host root, binds made by container root), or none and a
    warning naming why.  Without nesting host root binds the files (locked: container root cannot lift
    them); with nesting it binds the tree at /dev/.lxcfs and container root binds the files from there, so
    that its /proc and /sys carry no locked mount and a nested runtime may mount its own."""
    path = mountpoint()
    if not serving(path):
        warn(
            f"lxcfs is not serving at {path}: the container sees the host's /proc/meminfo, cpuinfo, "
            "uptime... (start it with 'python -m engine lxcfs')"
        )
        return [], []
    if not nesting:
        return mounts(path), []
    tree = Mount(str(INSIDE).lstrip("/"), None, str(path), sc.MS_BIND | sc.MS_REC)
    return [tree], mounts(path, INSIDE)
