#!/usr/bin/env python3
"""Migration throughput: ``python -m engine migrate`` between two engines against ``tar | zstd | socat``.

Two engines on this machine (each its own state root, run directory and cgroup parent) and two network
namespaces joined by one veth; a stopped busybox container with ``--data-mb`` of data (half random bytes
in 256 KiB files, half a text file that compresses well) moves from one to the other and back, sample by
sample.  Caisson's side is the whole migration: the archive (ids unshifted, xattrs, hard links) streamed
over mutual TLS 1.3, spooled and checked (size, SHA-256) on the target, restored there with its checked
extraction and id shift, then the source removed; its receiver is ``python -m engine migrate-receive`` in
a process of its own, started before the clock runs.  The peer is the same tree copied as
``tar -C src -cf - . | zstd -1 -T0 | socat - TCP:…`` into ``socat TCP-LISTEN:… - | zstd -d | tar -xf -``
over the same veth: no encryption, no verification, no id shift, nothing removed.  zstd level 1 on both.
Warm page cache, alternating A B A B.  The ratio is throughput, Caisson over the pipe (time of the pipe over
time of Caisson): the goal is at least 0.9.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backup import add_data
from common import Report, alternate, entry, ms_since

from engine.lifecycle import Engine
from engine.migrate.channel import make_identity
from engine.migrate.send import migrate
from tests.engine.migrate_lab import receiver, veth_pair

PARENT = "caisson-bench-mig"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="measured samples per side (default %(default)s)")
    p.add_argument("--warmup", type=int, default=1, help="discarded warm-up rounds (default %(default)s)")
    p.add_argument("--data-mb", type=int, default=300, help="data in the container (default %(default)s MB)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the raw samples and summaries here")
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("the benchmark needs root (network namespaces, containers)")
    from engine.builders.busybox import build_busybox

    work = Path(tempfile.mkdtemp(prefix="caisson-bench-migrate-"))
    engines = {}
    try:
        for name in ("a", "b"):
            engines[name] = Engine(
                root=work / name / "state", run_dir=work / name / "run", cgroup_parent=f"{PARENT}-{name}"
            )
            engines[name].layout.ensure()
        template = build_busybox(work / "templates")
        ctid = 990_001
        engines["a"].create(ctid, template, {"hostname": "benchmig"})
        add_data(engines["a"]._rootfs(engines["a"].config(ctid)), args.data_mb)
        with veth_pair() as (ns_a, addr_a, ns_b, addr_b):
            sides = {"a": (ns_a, addr_a), "b": (ns_b, addr_b)}
            where = ["a"]

            def caisson() -> float:
                src, dst = where[0], "b" if where[0] == "a" else "a"
                identity = work / "id.pem"
                make_identity(identity)
                env = {
                    **os.environ,
                    "CAISSON_ROOT": str(engines[dst].layout.root),
                    "CAISSON_RUN": str(engines[dst].layout.run),
                    "CAISSON_CGROUP_PARENT": f"{PARENT}-{dst}",
                }
                proc, end = receiver(env, ctid, identity, sides[dst][0], sides[dst][1])
                start = time.perf_counter_ns()
                migrate(
                    engines[src],
                    ctid,
                    f"{end['address']}:{end['port']}",
                    end["fingerprint"],
                    identity,
                    netns=sides[src][0],
                    log=(lambda t: print(f"{time.monotonic():.2f} {t}", file=sys.stderr))
                    if os.environ.get("BENCH_TRACE")
                    else None,
                )
                elapsed = ms_since(start)
                if proc.wait(60) != 0:
                    raise SystemExit("the receiver failed")
                where[0] = dst
                return elapsed

            def pipe() -> float:
                src_engine = engines[where[0]]
                tree = src_engine._rootfs(src_engine.config(ctid))
                dst_ns, dst_addr = sides["b" if where[0] == "a" else "a"]
                target = work / "pipe-target"
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir()
                listener = subprocess.Popen(
                    [
                        "ip",
                        "netns",
                        "exec",
                        dst_ns,
                        "sh",
                        "-c",
                        f"socat -u TCP-LISTEN:47001,bind={dst_addr},reuseaddr - | zstd -d -q | "
                        f"tar -C {target} -xpf - --numeric-owner --xattrs",
                    ],
                )
                time.sleep(0.3)  # socat listening (before the clock runs)
                start = time.perf_counter_ns()
                subprocess.run(
                    [
                        "ip",
                        "netns",
                        "exec",
                        sides[where[0]][0],
                        "sh",
                        "-c",
                        f"tar -C {tree} -cpf - --numeric-owner --xattrs . | zstd -1 -T0 -q | "
                        f"socat -u - TCP:{dst_addr}:47001",
                    ],
                    check=True,
                )
                listener.wait(120)
                elapsed = ms_since(start)
                shutil.rmtree(target)
                return elapsed

            samples = alternate([("caisson", caisson), ("pipe", pipe)], args.runs, args.warmup, label="migrate")
        report = Report(
            "migration of a stopped container over one veth, warm cache",
            {"runs": args.runs, "data": f"{args.data_mb} MB", "order": "Caisson pipe …"},
            against="tar|zstd|socat",
        )
        size_mb = args.data_mb
        report.add(
            f"migrate {size_mb} MB: engine migrate vs tar|zstd -1|socat (time)",
            samples["caisson"],
            samples["pipe"],
            note="throughput ratio (pipe time / Caisson time): "
            + ", ".join(f"{p / c:.2f}" for c, p in zip(samples["caisson"], samples["pipe"], strict=True)),
        )
        report.finish(args.json)
        ratios = sorted(p / c for c, p in zip(samples["caisson"], samples["pipe"], strict=True))
        print(f"throughput Caisson / pipe: median {ratios[len(ratios) // 2]:.2f} (goal ≥ 0.9)")
    finally:
        for eng in engines.values():
            for ident in eng.ids():
                eng.destroy(ident, force=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    entry(main)
