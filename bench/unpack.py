#!/usr/bin/env python3
"""Unpack a template tarball: the engine's safe extractor against zstd -d | tar -x on the same archive.

Both sides write a fresh directory on the same filesystem, alternating, with the page cache dropped and
the disk synced before each sample (cold figures: the disk dominates, and it swings with what it did just
before, so only the pairwise ratio means much). The engine's side also checks every member, shifts
ownership to the user namespace and renames into place atomically; tar does none of that.
Goal: within 1.1x of tar.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from common import Report, Session, alternate, entry, ms_since, parser

from engine.idmap import IdMap
from engine.unpack import extract_archive

GOAL = 1.1


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def main() -> None:
    p = parser(__doc__.splitlines()[0], runs=5, warmup=1)
    p.add_argument(
        "--archive", type=Path, help="unpack this tarball instead of --template's (e.g. where no Debian one is cached)"
    )
    args = p.parse_args()
    with Session("unpack", args) as s:
        template = args.archive or s.template(args.template)
        work = Path(s.workdir)

        def fresh(name: str) -> Path:
            target = work / name
            shutil.rmtree(target, ignore_errors=True)
            drop_caches()
            return target

        def caisson() -> float:
            target = fresh("caisson")
            start = time.perf_counter_ns()
            extract_archive(template, target, IdMap())
            elapsed = ms_since(start)
            shutil.rmtree(target)
            return elapsed

        def tar() -> float:
            target = fresh("tar")
            target.mkdir()
            start = time.perf_counter_ns()
            subprocess.run(
                f"zstd -dc '{template}' | tar -x --numeric-owner -C '{target}' -f -",
                shell=True,
                check=True,
                stderr=subprocess.DEVNULL,
            )
            elapsed = ms_since(start)
            shutil.rmtree(target)
            return elapsed

        samples = alternate([("caisson", caisson), ("tar", tar)], args.runs, args.warmup, label="unpack")
        report = Report(
            f"unpack {template.name}, cold cache", {"runs": args.runs, "order": "Caisson tar …"}, against="zstd|tar"
        )
        report.add(
            "unpack: extract_archive (checked, id-shifted, atomic) vs zstd -dc | tar -x",
            samples["caisson"],
            samples["tar"],
            goal=GOAL,
        )
        report.finish(args.json)


if __name__ == "__main__":
    entry(main)
