#!/usr/bin/env python3
"""Start a stopped container until a command inside it answers: Caisson against LXC.

Rows (each sample starts a stopped container; the stop between samples is not timed):

* warm path: ``e.start(c); e.exec(c, ["true"])`` in this long-lived process (as the node
  agent calls it) against ``lxc-start -d`` then ``lxc-attach -- true`` run as subprocesses,
  which is what an LXC user runs; both timed here with perf_counter_ns.
* CLI: ``python -m engine start C`` then ``python -m engine exec C -- true`` against the same
  two LXC commands, each pair timed the same way: once with the node's CLI service running (as
  when the agent runs: the thin client forwards each command line), once without (in-process).

With ``--hyperfine`` the CLI pair is also timed by hyperfine as one shell command line each
(``--prepare`` stops the container), as a cross-check that does not alternate.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from common import (
    Report,
    Session,
    alternate,
    entry,
    hyperfine,
    ms_since,
    parser,
    reap_children,
    timed_commands,
)

WARM_GOAL = 0.5
CLI_GOAL = 2.0


def main() -> None:
    p = parser(__doc__.splitlines()[0], runs=30)
    p.add_argument("--hyperfine", action="store_true", help="also time the CLI pairs with hyperfine (cross-check)")
    args = p.parse_args()

    with Session("start", args) as s:
        caisson, lxc, ctid, name = s.pair("start")
        e = caisson.engine

        def caisson_warm() -> float:
            start = time.perf_counter_ns()
            e.start(ctid)
            code = e.exec(ctid, ["true"])
            elapsed = ms_since(start)
            if code != 0:
                raise RuntimeError(f"exec true in container {ctid} returned {code}")
            caisson.stop(ctid)
            return elapsed

        def caisson_cli(env: dict[str, str]) -> Callable[[], float]:
            def sample() -> float:
                caisson.mark_cli_started(ctid)
                elapsed = timed_commands(
                    caisson.cli("start", str(ctid)), caisson.cli("exec", str(ctid), "--", "true"), env=env
                )
                caisson.stop(ctid)
                return elapsed

            return sample

        def lxc_pair() -> float:
            elapsed = timed_commands(lxc.start_argv(name), lxc.attach_argv(name))
            lxc.stop(name)
            return elapsed

        samples = alternate(
            [
                ("caisson_warm", caisson_warm),
                ("lxc_warm", lxc_pair),
                ("caisson_cli", caisson_cli(caisson.service_env)),
                ("lxc_cli", lxc_pair),
                ("caisson_cli_alone", caisson_cli(caisson.env)),
                ("lxc_cli_alone", lxc_pair),
            ],
            args.runs,
            args.warmup,
            label="start→exec",
            idle=args.idle,
        )

        report = Report(
            f"start until `true` answers inside — {args.template} template",
            {
                "runs": args.runs,
                "warm-ups": args.warmup,
                "order": "Caisson LXC Caisson LXC …",
                "idle before each sample": f"{args.idle:g} s",
            },
            notes=s.notes,
        )
        report.add(
            "warm: e.start+e.exec  vs  lxc-start -d + lxc-attach",
            samples["caisson_warm"],
            samples["lxc_warm"],
            goal=WARM_GOAL,
        )
        report.add(
            "CLI (agent running): engine start + engine exec  vs  lxc-start -d + lxc-attach",
            samples["caisson_cli"],
            samples["lxc_cli"],
            goal=CLI_GOAL,
        )
        report.add(
            "CLI (no agent: in-process)  vs  lxc-start -d + lxc-attach",
            samples["caisson_cli_alone"],
            samples["lxc_cli_alone"],
        )

        if args.hyperfine:
            caisson.mark_cli_started(ctid)
            stop_c = caisson.cli_shell("stop", str(ctid)) + " >/dev/null 2>&1 || true"
            stop_l = lxc.shell("lxc-stop", name, "-k") + " >/dev/null 2>&1 || true"
            hf = hyperfine(
                [
                    (
                        "caisson",
                        caisson.cli_shell("start", str(ctid))
                        + " >/dev/null && "
                        + caisson.cli_shell("exec", str(ctid), "--", "true"),
                        stop_c,
                    ),
                    (
                        "lxc",
                        lxc.shell("lxc-start", name, "-d") + " && " + lxc.shell("lxc-attach", name, "--", "true"),
                        stop_l,
                    ),
                ],
                args.runs,
                args.warmup,
                s.workdir,
                env=caisson.env,
            )
            caisson.stop(ctid)
            lxc.stop(name)
            reap_children()
            report.add(
                "CLI via hyperfine (sh -c 'start && exec'; blocks, not alternating)",
                hf["caisson"],
                hf["lxc"],
                goal=CLI_GOAL,
            )
        report.finish(args.json)


if __name__ == "__main__":
    entry(main)
