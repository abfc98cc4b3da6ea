"""Where this host mounts its cgroup hierarchies, read from mountinfo.

Apart from the drivers so that both the package's ``detect`` and a driver made
without explicit mounts can read them, with no import running back up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from engine.errors import HostError

_V1_CONTROLLERS = {
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "net_cls",
    "net_prio",
    "perf_event",
    "hugetlb",
    "rdma",
    "misc",
}


@dataclass(frozen=True)
class CgroupMounts:
    """Where the hierarchies are mounted: v1 maps controller (or ``name=x``) to mount point."""

    v1: dict[str, str] = field(default_factory=dict)
    unified: str | None = None

    def v1_roots(self) -> list[str]:
        """Each v1 mount point once (co-mounted controllers share one)."""
        return list(dict.fromkeys(self.v1.values()))


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
