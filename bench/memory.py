#!/usr/bin/env python3
"""Host memory each running container costs outside itself: Caisson against LXC.

N containers run on each side (started alternately, Caisson then LXC). Every process
that appeared meanwhile is sorted by where it lives:

* inside a container's cgroup (``caisson-bench/<ID>`` or ``lxc.payload.<name>``): the
  container itself, the same busybox or Debian on both sides; not counted;
* LXC's ``[lxc monitor]`` (the daemonised ``lxc-start``, one per container): LXC's cost;
* the node's terminal holder (``engine.ttyholder``: one per node, like the agent, holding every
  container's console and ttys so that they outlive the agent): shown apart, with its size and
  what it would cost per container if charged to these N, not counted per container;
* anything else descended from this process (a child subreaper, as the node agent is, so
  every orphan of ours is re-parented here): what Caisson left behind (by design nothing:
  after start no process of the engine stays per container);
* anything else (kernel threads, other users of the host): listed, not counted.

RSS and PSS come from /proc/PID/smaps_rollup. Caisson's per-container figure is its total
over N; LXC's is each monitor's own. The memory charged to each container's own cgroup
is shown too, to check that both sides run the same thing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from common import CGROUP_PARENT, CaissonSide, LxcSide, Report, Session, entry, parser, run

GOAL = 0.1
NODE_WIDE = "-m engine.ttyholder"  # one per node, started by the first start that has terminals


def pids() -> set[int]:
    return {int(p) for p in os.listdir("/proc") if p.isdigit()}


def read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def rollup(pid: int) -> tuple[float, float]:
    """(RSS, PSS) in MB from smaps_rollup."""
    values = {}
    for line in read(f"/proc/{pid}/smaps_rollup").splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            values[key] = int(rest.split()[0]) / 1024
    return values.get("Rss", 0.0), values.get("Pss", 0.0)


def ancestors(pid: int) -> list[int]:
    chain = []
    while pid > 1:
        status = read(f"/proc/{pid}/status")
        ppid = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:")), 0)
        chain.append(ppid)
        pid = ppid
    return chain


def cgroup_memory_mb(path: str) -> float | None:
    """Memory charged to a container's top cgroup (``/caisson-bench/ID``, ``/lxc.payload.NAME``),
    sub-cgroups included: the v1 memory controller, or cgroup2 when it holds the controllers."""
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        value = read(f"/sys/fs/cgroup{path}/memory.current")
    else:
        value = read(f"/sys/fs/cgroup/memory{path}/memory.usage_in_bytes")
    return int(value) / 2**20 if value.strip() else None


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("-n", "--containers", type=int, default=10, help="running containers per side (default %(default)s)")
    p.add_argument("--settle", type=float, default=1.0, help="seconds to wait after the starts (default %(default)s)")
    args = p.parse_args()
    n = args.containers

    with Session("memory", args) as s:
        template = s.template(args.template)
        caisson, lxc = CaissonSide(s), LxcSide(s)
        ctids = [caisson.create(template, f"bench-mem{i}") for i in range(n)]
        names = [lxc.create(template, f"mem{i}") for i in range(n)]

        before = pids()
        for ctid, name in zip(ctids, names, strict=True):
            caisson.engine.start(ctid)
            run(lxc.start_argv(name))
        time.sleep(args.settle)
        new = sorted(pids() - before)

        me = os.getpid()
        container, monitors, left, node_wide, other = [], {}, [], [], []
        for pid in new:
            groups = read(f"/proc/{pid}/cgroup")
            if not groups:
                continue  # gone already
            if f"/{CGROUP_PARENT}/" in groups or "/lxc.payload." in groups:
                container.append(pid)
            elif cmdline(pid).startswith(f"[lxc monitor] {lxc.path} "):
                monitors[pid] = cmdline(pid).split()[-1]
            elif me in ancestors(pid) and NODE_WIDE in cmdline(pid):
                node_wide.append(pid)
            elif me in ancestors(pid):
                left.append(pid)  # this process is a child subreaper: every orphan of ours lands here
            else:
                other.append(pid)

        monitor_of = {name: pid for pid, name in monitors.items()}
        missing = [name for name in names if name not in monitor_of]
        if missing:
            raise RuntimeError(f"no [lxc monitor] found for {', '.join(missing)}")
        lxc_rss = [rollup(monitor_of[name])[0] for name in names]
        lxc_pss = [rollup(monitor_of[name])[1] for name in names]
        left_rss = sum(rollup(pid)[0] for pid in left)
        left_pss = sum(rollup(pid)[1] for pid in left)
        caisson_rss, caisson_pss = [left_rss / n] * n, [left_pss / n] * n

        caisson_cg = [cgroup_memory_mb(f"/{CGROUP_PARENT}/{ctid}") or 0.0 for ctid in ctids]
        lxc_cg = [cgroup_memory_mb(f"/lxc.payload.{name}") or 0.0 for name in names]

        report = Report(
            f"host memory per running container, outside the container — {args.template} template",
            {"containers per side": n, "started": "alternately, Caisson then LXC", "settle": f"{args.settle:g} s"},
            notes=s.notes,
        )
        report.add("resident processes per container", [len(left) / n] * n, [len(monitors) / n] * n, unit="count")
        report.add("RSS per container", caisson_rss, lxc_rss, unit="MB", goal=GOAL)
        report.add("PSS per container", caisson_pss, lxc_pss, unit="MB", goal=GOAL)
        report.add(
            "memory charged to the container's own cgroup",
            caisson_cg,
            lxc_cg,
            unit="MB",
            note="the containers themselves (not counted above); both sides should be alike",
        )
        own_rss, own_pss = rollup(me)
        report.notes.append(
            f"Caisson: {len(left)} process(es) left outside the containers"
            + (f" ({', '.join(f'{pid} {cmdline(pid)!r}' for pid in left)})" if left else "")
            + f"; LXC: {len(monitors)} monitor(s). The engine's own long-lived process (here this "
            f"benchmark, on a node the agent) is one per node, not per container: "
            f"{own_rss:.1f} MB RSS, {own_pss:.1f} MB PSS."
        )
        if node_wide:
            rss, pss = (sum(rollup(pid)[i] for pid in node_wide) for i in (0, 1))
            report.notes.append(
                f"Caisson's node-wide terminal holder ({len(node_wide)} process, one per node whatever the number of "
                f"containers): {rss:.1f} MB RSS, {pss:.1f} MB PSS; charged to these {n} containers it would be "
                f"{rss / n:.2f} MB RSS, {pss / n:.2f} MB PSS each (at 200 containers: {pss / 200:.3f} MB PSS)."
            )
        if other:
            report.notes.append(
                f"{len(other)} other new process(es) on the host, not counted: "
                + ", ".join(f"{pid} {cmdline(pid)[:40] or '[kernel]'!r}" for pid in other[:8])
            )
        report.notes.append(f"{len(container)} process(es) inside the {2 * n} containers, not counted.")
        report.finish(args.json)


if __name__ == "__main__":
    entry(main)
