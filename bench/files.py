#!/usr/bin/env python3
"""Files into and out of a running container: Caisson's push/pull against LXC's lxc-attach with cat.

LXC has no push or pull of its own: the usual way is ``lxc-attach -- sh -c 'cat > PATH' < FILE``
(and ``lxc-attach -- cat PATH > FILE``), which runs a shell of the container.  Caisson's
``Engine.push``/``Engine.pull`` (the warm path the node agent takes) join the container's user and
mount namespaces from a forked helper, open beneath its root with openat2 and write beside the target.
Rows: a 4 KiB file (latency) and a 16 MiB file (throughput), push and pull, alternating.
"""

from __future__ import annotations

import io
import os
import subprocess
import time

from common import Report, Session, alternate, entry, ms_since, parser, run

SIZES = {"4 KiB": 4 << 10, "16 MiB": 16 << 20}


def main() -> None:
    p = parser(__doc__.splitlines()[0], runs=20)
    args = p.parse_args()

    with Session("files", args) as s:
        caisson, lxc, ctid, name = s.pair("files")
        e = caisson.engine
        e.start(ctid)
        run(lxc.start_argv(name))
        report = Report(
            f"push/pull of a file into a running container — {args.template} template",
            {"runs": args.runs, "warm-ups": args.warmup, "order": "Caisson LXC Caisson LXC …"},
            notes=s.notes,
        )
        for label, size in SIZES.items():
            source = s.workdir / f"payload-{size}"
            source.write_bytes(os.urandom(size))

            def caisson_push(source=source) -> float:
                start = time.perf_counter_ns()
                e.push(ctid, source, "/tmp/payload")
                return ms_since(start)

            def lxc_push(source=source) -> float:
                start = time.perf_counter_ns()
                with open(source, "rb") as stdin:
                    done = subprocess.run(
                        lxc.attach_argv(name, "/bin/sh", "-c", "cat > /tmp/payload"), stdin=stdin, capture_output=True
                    )
                elapsed = ms_since(start)
                if done.returncode:
                    raise RuntimeError(done.stderr.decode(errors="replace"))
                return elapsed

            def caisson_pull() -> float:
                sink = io.BytesIO()
                start = time.perf_counter_ns()
                e.pull(ctid, "/tmp/payload", sink)
                return ms_since(start)

            def lxc_pull() -> float:
                start = time.perf_counter_ns()
                done = subprocess.run(lxc.attach_argv(name, "cat", "/tmp/payload"), capture_output=True)
                elapsed = ms_since(start)
                if done.returncode:
                    raise RuntimeError(done.stderr.decode(errors="replace"))
                return elapsed

            samples = alternate(
                [("cp", caisson_push), ("lp", lxc_push), ("cl", caisson_pull), ("ll", lxc_pull)],
                args.runs,
                args.warmup,
                label=f"files {label}",
                idle=args.idle,
            )
            report.add(f"push {label}: e.push  vs  lxc-attach sh -c 'cat >'", samples["cp"], samples["lp"])
            report.add(f"pull {label}: e.pull  vs  lxc-attach cat", samples["cl"], samples["ll"])
        report.finish(args.json)


if __name__ == "__main__":
    entry(main)
