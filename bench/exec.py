#!/usr/bin/env python3
"""Run a command inside a running container: Caisson against LXC.

Rows (both containers run throughout):

* warm path: ``e.exec(c, ["true"])`` in this long-lived process (as the node agent calls it)
  against ``lxc-attach -- true`` run as a subprocess, both timed here with perf_counter_ns;
* CLI: ``python -m engine exec C -- true`` against ``lxc-attach -- true``, both as subprocesses.

With ``--hyperfine`` the CLI pair is also timed by hyperfine (``-N``, no shell), as a
cross-check that does not alternate.
"""

from __future__ import annotations

import time

from common import (
    Report,
    Session,
    alternate,
    entry,
    hyperfine,
    ms_since,
    parser,
    run,
    timed_commands,
)

WARM_GOAL = 1.0
CLI_GOAL = 2.0


def main() -> None:
    p = parser(__doc__.splitlines()[0], runs=40)
    p.add_argument("--hyperfine", action="store_true", help="also time the CLI pair with hyperfine (cross-check)")
    args = p.parse_args()

    with Session("exec", args) as s:
        caisson, lxc, ctid, name = s.pair("exec")
        e = caisson.engine
        e.start(ctid)
        run(lxc.start_argv(name))

        def caisson_warm() -> float:
            start = time.perf_counter_ns()
            code = e.exec(ctid, ["true"])
            elapsed = ms_since(start)
            if code != 0:
                raise RuntimeError(f"exec true in container {ctid} returned {code}")
            return elapsed

        def caisson_cli() -> float:
            return timed_commands(caisson.cli("exec", str(ctid), "--", "true"), env=caisson.service_env)

        def caisson_cli_alone() -> float:
            return timed_commands(caisson.cli("exec", str(ctid), "--", "true"), env=caisson.env)

        def lxc_attach() -> float:
            return timed_commands(lxc.attach_argv(name))

        samples = alternate(
            [
                ("caisson_warm", caisson_warm),
                ("lxc_warm", lxc_attach),
                ("caisson_cli", caisson_cli),
                ("lxc_cli", lxc_attach),
                ("caisson_cli_alone", caisson_cli_alone),
                ("lxc_cli_alone", lxc_attach),
            ],
            args.runs,
            args.warmup,
            label="exec",
            idle=args.idle,
        )

        report = Report(
            f"exec `true` in a running container — {args.template} template",
            {
                "runs": args.runs,
                "warm-ups": args.warmup,
                "order": "Caisson LXC Caisson LXC …",
                "idle before each sample": f"{args.idle:g} s",
            },
            notes=s.notes,
        )
        report.add("warm: e.exec  vs  lxc-attach -- true", samples["caisson_warm"], samples["lxc_warm"], goal=WARM_GOAL)
        report.add(
            "CLI (agent running): engine exec -- true  vs  lxc-attach -- true",
            samples["caisson_cli"],
            samples["lxc_cli"],
            goal=CLI_GOAL,
        )
        report.add(
            "CLI (no agent: in-process)  vs  lxc-attach -- true",
            samples["caisson_cli_alone"],
            samples["lxc_cli_alone"],
        )

        if args.hyperfine:
            hf = hyperfine(
                [
                    ("caisson", caisson.cli_shell("exec", str(ctid), "--", "true"), None),
                    ("lxc", lxc.shell("lxc-attach", name, "--", "true"), None),
                ],
                args.runs,
                args.warmup,
                s.workdir,
                env=caisson.env,
                shell=False,
            )
            report.add("CLI via hyperfine -N (blocks, not alternating)", hf["caisson"], hf["lxc"])
        report.finish(args.json)


if __name__ == "__main__":
    entry(main)
