#!/usr/bin/env python3
"""Backup and restore: the engine's vzdump-format archives against tar with zstd -T0, as vzdump runs it.

Two stopped containers: the busybox template as it is, and the same with about 500 MB of data added
(half random bytes in 256 KiB files, half a text file that compresses well). Caisson's side is
``engine.backup`` (backup: id-unshifted, xattrs, excludes, temp name + fsync + rename; restore: the config
read and checked, ``Engine.create`` with its checked extraction and id shift, ``etc/vzdump`` removed);
tar's side is ``tar -I 'zstd -T0' -cpf`` of the same rootfs and ``tar -xpf`` of that archive into a
fresh directory, with no id shift and no checks, the nearest thing LXC has (it has no backup command;
Proxmox's vzdump runs this tar). Warm page cache, alternating A B A B; zstd level 3 on both sides.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from common import CaissonSide, Report, Session, alternate, entry, ms_since, parser

from engine.backup.dump import backup
from engine.backup.restore import restore

DATA_MB = 500


def add_data(root: Path, megabytes: int) -> None:
    """Half incompressible (random, 256 KiB files), half compressible (one text file)."""
    data = root / "srv" / "data"
    data.mkdir(parents=True)
    half = megabytes // 2
    for i in range(half * 4):
        (data / f"blob{i:05d}").write_bytes(os.urandom(256 << 10))
    line = b"2026-01-01 00:00:00 INFO request served in 12 ms from 10.0.0.1 to /index.html\n"
    with open(data / "app.log", "wb") as handle:
        for _ in range((half << 20) // (len(line) * 1000)):
            handle.write(line * 1000)
    for path in [data, *data.iterdir()]:
        os.chown(path, 100000, 100000)


def measure(report: Report, side: CaissonSide, work: Path, dumpdir: Path, label: str, ctid: int, args) -> None:
    engine = side.engine
    rootfs = engine._rootfs(engine.config(ctid))
    last: dict[str, Path] = {}

    def caisson_backup() -> float:
        for old in dumpdir.glob("vzdump-*"):
            old.unlink()
        start = time.perf_counter_ns()
        result = backup(engine, ctid, dumpdir=dumpdir, compress="zstd")
        elapsed = ms_since(start)
        last["caisson"] = Path(result.archive)
        return elapsed

    def tar_backup() -> float:
        out = work / "tar.tar.zst"
        out.unlink(missing_ok=True)
        start = time.perf_counter_ns()
        subprocess.run(
            [
                "tar",
                "-I",
                "zstd -3 -T0",
                "-cpf",
                str(out),
                "--numeric-owner",
                "--xattrs",
                "--sparse",
                "--one-file-system",
                "-C",
                str(rootfs),
                ".",
            ],
            check=True,
        )
        subprocess.run(["sync", "-f", str(out)], check=True)  # the engine fsyncs its archive
        elapsed = ms_since(start)
        last["tar"] = out
        return elapsed

    samples = alternate(
        [("caisson", caisson_backup), ("tar", tar_backup)], args.runs, args.warmup, label=f"backup {label}"
    )
    sizes = (last["caisson"].stat().st_size, last["tar"].stat().st_size)
    report.add(
        f"backup {label}: engine.backup vs tar -I 'zstd -T0'",
        samples["caisson"],
        samples["tar"],
        note=f"archive sizes: Caisson {sizes[0] / 1e6:.1f} MB, tar {sizes[1] / 1e6:.1f} MB",
    )
    archive, tar_archive = last["caisson"], last["tar"]

    def caisson_restore() -> float:
        ctid_new = side._free_ctid()
        side.ctids.append(ctid_new)
        start = time.perf_counter_ns()
        restore(engine, archive, ctid_new)
        elapsed = ms_since(start)
        engine.destroy(ctid_new)
        return elapsed

    def tar_restore() -> float:
        target = work / "tar-restore"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        start = time.perf_counter_ns()
        subprocess.run(
            ["tar", "-I", "zstd -T0", "-xpf", str(tar_archive), "--numeric-owner", "--xattrs", "-C", str(target)],
            check=True,
        )
        elapsed = ms_since(start)
        shutil.rmtree(target)
        return elapsed

    samples = alternate(
        [("caisson", caisson_restore), ("tar", tar_restore)], args.runs, args.warmup, label=f"restore {label}"
    )
    report.add(f"restore {label}: engine.backup.restore vs tar -x", samples["caisson"], samples["tar"])


def main() -> None:
    p = parser(__doc__.splitlines()[0], runs=3, warmup=1, templates=("busybox",))
    p.add_argument("--data-mb", type=int, default=DATA_MB, help="data added to the second container (MB)")
    args = p.parse_args()
    with Session("backup", args) as s:
        template = s.template("busybox")
        side = CaissonSide(s)
        engine = side.engine
        work = Path(s.workdir)
        dumpdir = work / "dump"
        dumpdir.mkdir()
        plain = side.create(template, "bkplain")
        big = side.create(template, "bkbig")
        add_data(engine._rootfs(engine.config(big)), args.data_mb)
        report = Report(
            "backup and restore of a stopped container, warm cache",
            {"runs": args.runs, "order": "Caisson tar …", "data": f"{args.data_mb} MB"},
            against="tar+zstd",
        )
        for label, ctid in (("busybox", plain), (f"busybox + {args.data_mb} MB", big)):
            measure(report, side, work, dumpdir, label, ctid, args)
        report.notes.append(
            "tar runs with neither an id shift nor member checks; vzdump itself runs it inside the "
            "container's user namespace to unshift owners."
        )
        report.finish(args.json)


if __name__ == "__main__":
    entry(main)
