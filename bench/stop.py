#!/usr/bin/env python3
"""Stop a running container, hard and gracefully: Caisson against LXC.

Rows (each sample stops a container started just before, untimed):

* hard stop: ``e.stop(c)`` in this long-lived process against ``lxc-stop -k`` as a subprocess;
* hard stop from the CLI: ``python -m engine stop C`` against ``lxc-stop -k`` (for reference);
* graceful stop: ``e.shutdown(c, timeout=30, force_stop=False)`` against ``lxc-stop`` (clean).
  Both sides send init the same power-off signal (busybox: SIGUSR2, set as LXC's
  ``lxc.signal.halt``), so both wait for the same shutdown inside: busybox init's own
  sleeps take about 2 s, which is why this row has fewer runs.
"""

from __future__ import annotations

import time

from common import (
    Report,
    Session,
    alternate,
    entry,
    ms_since,
    parser,
    reap_children,
    run,
    timed_commands,
)

GOAL = 1.0


def main() -> None:
    p = parser(
        __doc__.splitlines()[0], runs=30, idle=0.05, idle_help="pause between the untimed start and the timed stop"
    )
    p.add_argument(
        "--graceful-runs",
        type=int,
        default=5,
        help="measured graceful stops per side (about 2 s each with busybox; default %(default)s)",
    )
    args = p.parse_args()

    with Session("stop", args) as s:
        caisson, lxc, ctid, name = s.pair("stop")
        e = caisson.engine

        def caisson_hard() -> float:
            e.start(ctid)
            time.sleep(args.idle)
            start = time.perf_counter_ns()
            e.stop(ctid)
            elapsed = ms_since(start)
            reap_children()
            return elapsed

        def caisson_cli_hard() -> float:
            # Started under the CLI's cgroup parent, so that the CLI's stop finds and removes the cgroup.
            caisson.cli_engine.start(ctid)
            caisson.mark_cli_started(ctid)
            time.sleep(args.idle)
            elapsed = timed_commands(caisson.cli("stop", str(ctid)), env=caisson.env)
            caisson.cli_started.discard(ctid)
            reap_children()
            if caisson.running(ctid):
                raise RuntimeError(f"container {ctid} still runs after 'python -m engine stop'")
            return elapsed

        def lxc_hard() -> float:
            run(lxc.start_argv(name))
            time.sleep(args.idle)
            elapsed = timed_commands(lxc.cmd("lxc-stop", name, "-k"))
            reap_children()
            return elapsed

        def caisson_graceful() -> float:
            e.start(ctid)
            time.sleep(args.idle)
            start = time.perf_counter_ns()
            e.shutdown(ctid, timeout=30, force_stop=False)
            elapsed = ms_since(start)
            reap_children()
            return elapsed

        def lxc_graceful() -> float:
            run(lxc.start_argv(name))
            time.sleep(args.idle)
            elapsed = timed_commands(lxc.cmd("lxc-stop", name, "-t", "30"))
            reap_children()
            return elapsed

        hard = alternate(
            [("caisson", caisson_hard), ("lxc", lxc_hard), ("caisson_cli", caisson_cli_hard), ("lxc_cli", lxc_hard)],
            args.runs,
            args.warmup,
            label="hard stop",
        )
        graceful = alternate(
            [("caisson", caisson_graceful), ("lxc", lxc_graceful)], args.graceful_runs, 1, label="graceful stop"
        )

        report = Report(
            f"stop a running container — {args.template} template",
            {
                "runs": f"{args.runs} hard, {args.graceful_runs} graceful",
                "warm-ups": f"{args.warmup} hard, 1 graceful",
                "order": "Caisson LXC Caisson LXC …",
                "pause between start and timed stop": f"{args.idle:g} s",
            },
            notes=s.notes,
        )
        report.add("hard: e.stop  vs  lxc-stop -k", hard["caisson"], hard["lxc"], goal=GOAL)
        report.add("hard, CLI: engine stop  vs  lxc-stop -k", hard["caisson_cli"], hard["lxc_cli"])
        report.add("graceful: e.shutdown  vs  lxc-stop", graceful["caisson"], graceful["lxc"], goal=GOAL)
        report.finish(args.json)


if __name__ == "__main__":
    entry(main)
