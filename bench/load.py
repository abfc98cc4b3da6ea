#!/usr/bin/env python3
"""Many running containers at once: Caisson against LXC with N busybox containers running on each side.

Measured, side by side in one run (containers started alternately, Caisson then LXC):

* start until ``true`` answers inside, for the first containers and for the last ones (the Nth
  start meets N-1 running containers): ``Engine.start`` + ``Engine.exec`` in this process (the
  node agent's warm path) against ``lxc-start -d`` + ``lxc-attach -- true``;
* host memory per running container outside the container (Caisson: whatever is left descended
  from this process, a child subreaper as the agent is; LXC: its ``[lxc monitor]``);
* the node agent's tick over N running containers, its engine side: every container's status
  with usage (``Engine.list``, what the tick samples and mirrors) and the periodic recovery
  (``engine.recovery.recover(full=False)``), against ``lxc-ls -f`` (LXC's listing of every
  container's state, pid, addresses) on the same N;
* with ``--web``: ``bench/web.py`` (the container list API's p95 and click-to-running with its own
  PostgreSQL database, Redis and agent) run once before the containers start and once while they
  run, and its figures printed side by side.

N is ``-n`` (default 200). On the shared 2-core host a smaller N is kinder; the report says which.

    sudo .venv/bin/python bench/load.py -n 200 [--ticks 10] [--web]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from common import CGROUP_PARENT, CaissonSide, LxcSide, Report, Session, entry, ms_since, parser, run
from memory import ancestors, cmdline, pids, read, rollup

EDGE = 10  # the first and last containers compared


def _start_caisson(side: CaissonSide, ctid: int) -> float:
    began = time.perf_counter_ns()
    side.engine.start(ctid)
    code, _, _ = side.engine.exec_output(ctid, ["true"])
    took = ms_since(began)
    assert code == 0
    return took


def _start_lxc(side: LxcSide, name: str) -> float:
    began = time.perf_counter_ns()
    run(side.start_argv(name))
    while subprocess.run(side.attach_argv(name), capture_output=True).returncode != 0:
        pass
    return ms_since(began)


def _tick(side: CaissonSide) -> float:
    from engine.recovery import recover

    began = time.perf_counter_ns()
    statuses = side.engine.list()
    recover(side.engine, full=False)
    took = ms_since(began)
    assert sum(s.status == "running" for s in statuses) == len(side.ctids)
    return took


def _web(json_path: Path) -> str:
    """bench/web.py's report (its own database, Redis and agent), run in a child process."""
    script = Path(__file__).resolve().parent / "web.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--runs", "100", "--starts", "10", "--json", str(json_path)],
        capture_output=True,
        text=True,
    )
    return proc.stdout + proc.stderr


def main() -> None:
    p = parser(__doc__.splitlines()[0], templates=("busybox",))
    p.add_argument(
        "-n", "--containers", type=int, default=200, help="running containers per side (default %(default)s)"
    )
    p.add_argument("--ticks", type=int, default=10, help="tick samples per side (default %(default)s)")
    p.add_argument("--web", action="store_true", help="also run bench/web.py before and while the containers run")
    args = p.parse_args()
    n = args.containers
    if n < 2 * EDGE:
        p.error(f"--containers: at least {2 * EDGE}")

    with Session("load", args) as s:
        web_before = _web(s.workdir / "web-idle.json") if args.web else ""
        template = s.template(args.template)
        caisson, lxc = CaissonSide(s), LxcSide(s)
        made = time.monotonic()
        ctids = [caisson.create(template, f"bench-load{i}") for i in range(n)]
        names = [lxc.create(template, f"load{i}") for i in range(n)]
        made = time.monotonic() - made

        before = pids()
        c_starts, l_starts = [], []
        started = time.monotonic()
        for i, (ctid, name) in enumerate(zip(ctids, names, strict=True)):
            c_starts.append(_start_caisson(caisson, ctid))
            l_starts.append(_start_lxc(lxc, name))
            if (i + 1) % 50 == 0:
                print(f"  {i + 1} of {n} running on each side", file=sys.stderr)
        started = time.monotonic() - started
        time.sleep(1.0)

        me = os.getpid()
        left, monitors = [], {}
        for pid in sorted(pids() - before):
            groups = read(f"/proc/{pid}/cgroup")
            if not groups or f"/{CGROUP_PARENT}/" in groups or "/lxc.payload." in groups:
                continue
            if cmdline(pid).startswith(f"[lxc monitor] {lxc.path} "):
                monitors[pid] = cmdline(pid).split()[-1]
            elif me in ancestors(pid):
                left.append(pid)
        lxc_pss = [rollup(pid)[1] for pid in monitors]
        caisson_pss = [sum(rollup(pid)[1] for pid in left) / n] * len(lxc_pss or [0])

        c_ticks, l_ticks = [], []
        for _ in range(args.ticks):
            c_ticks.append(_tick(caisson))
            began = time.perf_counter_ns()
            run(["lxc-ls", "-P", str(lxc.path), "-f"])
            l_ticks.append(ms_since(began))

        web_loaded = _web(s.workdir / "web-loaded.json") if args.web else ""

        report = Report(
            f"{n} running busybox containers per side",
            {
                "containers per side": n,
                "created": f"{made:.0f} s",
                "started": f"alternately, {started:.0f} s for all",
                "cpus": os.cpu_count(),
            },
            notes=s.notes,
        )
        report.add(f"start until true answers, containers 1-{EDGE}", c_starts[:EDGE], l_starts[:EDGE])
        report.add(
            f"start until true answers, containers {n - EDGE + 1}-{n}",
            c_starts[-EDGE:],
            l_starts[-EDGE:],
            note=f"the {n}th start meets {n - 1} running containers on its side ({n - 1} more on the other)",
        )
        report.add(f"start of container {n}", c_starts[-1:], l_starts[-1:])
        report.add(
            "PSS per container outside it",
            caisson_pss,
            lxc_pss,
            unit="MB",
            goal=0.1,
            note=f"Caisson: {len(left)} processes left in all; LXC: {len(monitors)} monitors",
        )
        report.add(
            "tick over every container",
            c_ticks,
            l_ticks,
            note="Caisson: Engine.list (status and usage of each) + recover(full=False), in process; "
            "LXC: lxc-ls -f (a command). The agent's tick also mirrors into the database (not timed here)",
        )
        report.finish(args.json)
        if args.web:
            print("\n--- bench/web.py before the containers started ---\n" + web_before)
            print(f"--- bench/web.py while {n} + {n} containers ran ---\n" + web_loaded)


if __name__ == "__main__":
    entry(main)
