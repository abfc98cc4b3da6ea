#!/usr/bin/env python3
"""Snapshot, rollback and clone: Caisson's storage backends against LXC 5's lxc-snapshot and lxc-copy.

Both sides work on the same data, on the same file systems: a btrfs made on a
loop-mounted image file in the temp dir, and the temp dir's own file system for
directories and overlays.  Each backend is measured twice: with the busybox
rootfs as it is, and with 1 GiB of random data added to it (``--big-mib``).
The containers are stopped (as ``lxc-snapshot`` requires).

Rows, per backend and size (time in ms; extra disk in KiB, the drop of the
file system's free space, measured after a sync):

* snapshot: ``Engine.snapshot`` against ``lxc-snapshot`` (btrfs: both use btrfs snapshots;
  dir: Caisson copies with ``cp --reflink=auto``, LXC with rsync; overlay: Caisson freezes the
  upper layer, LXC has no overlay snapshot of its own, so ``lxc-snapshot`` of a directory container);
* snapshot through the command line (btrfs and the overlay layouts): ``python -m engine snapshot``
  with the node's CLI service running (as when the agent runs) against the same ``lxc-snapshot``:
  both are a command a person types;
* rollback: ``Engine.rollback`` against ``lxc-snapshot -r``;
* clone from a snapshot: ``Engine.clone(snapshot=...)`` (linked on btrfs and overlay) against
  ``lxc-copy -s`` (btrfs: a btrfs snapshot; overlay: ``-B overlay``; dir: a full copy, ``lxc-copy``).

Goals: btrfs and overlay snapshot and clone within 15 ms and 100 KiB of extra disk whatever the size;
rollback within 50 ms; the command line's snapshot within 2× ``lxc-snapshot``'s.
"""

from __future__ import annotations

import os
import subprocess
import time

from common import (
    CaissonSide,
    LxcSide,
    Report,
    Session,
    entry,
    ms_since,
    parser,
    run,
    timed_commands,
)

from engine.config import write_atomic
from engine.storage import cfg
from engine.storage.base import StorageDef
from engine.storage.btrfs import subvolume_create

BACKENDS = ("btrfs", "overlay", "dir", "dir-overlay")  # dir-overlay: a dir storage with "layout overlay"
FAST = ("btrfs", "overlay", "dir-overlay")
TIME_GOAL_MS = 15.0
DISK_GOAL_KIB = 100.0
ROLLBACK_GOAL_MS = 50.0
CLI_GOAL = 2.0  # the command line's snapshot against lxc-snapshot's, as bench/start_to_exec.py's CLI rows


def free_kib(path) -> float:
    os.sync()
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize / 1024


def main() -> None:
    p = parser(__doc__.splitlines()[0], runs=5, warmup=1, templates=("busybox",))
    p.add_argument("--big-mib", type=int, default=1024, help="data added for the large case (default %(default)s)")
    p.add_argument("--btrfs-gib", type=int, default=8, help="size of the btrfs image file (default %(default)s)")
    p.add_argument(
        "--backends", default=",".join(BACKENDS), help="comma-separated, of " + ", ".join(BACKENDS) + " (default all)"
    )
    args = p.parse_args()

    with Session("storage", args) as s:
        template = s.template(args.template)
        btrfs = s.workdir / "btrfs"
        image = s.workdir / "btrfs.img"
        with open(image, "wb") as handle:
            handle.truncate(args.btrfs_gib << 30)
        run(["mkfs.btrfs", "-q", str(image)])
        btrfs.mkdir()
        run(["mount", "-o", "loop", str(image), str(btrfs)])
        s.stack.callback(subprocess.run, ["umount", str(btrfs)], check=False)
        caisson = CaissonSide(s)
        e = caisson.engine
        storages = {
            "local": StorageDef("local", "dir", caisson.root, frozenset({"rootdir", "vztmpl"})),
            "btrfs": StorageDef("btrfs", "btrfs", btrfs / "caisson", frozenset({"rootdir"})),
            "overlay": StorageDef("overlay", "overlay", s.workdir / "overlay", frozenset({"rootdir"})),
            "dir": StorageDef("dir", "dir", s.workdir / "dirstore", frozenset({"rootdir"})),
            "dir-overlay": StorageDef(
                "dir-overlay", "dir", s.workdir / "dirlayered", frozenset({"rootdir"}), options={"layout": "overlay"}
            ),
        }
        cfg.save(caisson.root, storages)
        lxc = LxcSide(s)
        lxc_btrfs = btrfs / "lxc"
        lxc_btrfs.mkdir(mode=0o711)
        report = Report(
            "snapshot, rollback, clone — Caisson storage backends against lxc-snapshot / lxc-copy",
            {"runs": args.runs, "warm-ups": args.warmup, "large case": f"+{args.big_mib} MiB", "containers": "stopped"},
            notes=s.notes,
            against="LXC",
        )

        for size_name, big in (("busybox", 0), (f"+{args.big_mib} MiB", args.big_mib)):
            for backend in [b for b in args.backends.split(",") if b in BACKENDS]:
                ctid = caisson.create(template, f"bench-{backend}", {"storage": backend})
                config = e.config(ctid)
                _, driver, vol = e.storages.resolve(config.current.values["rootfs"].split(",")[0], ctid)
                tree = driver.path(vol) / "upper" if driver.info.name == "overlay" else driver.rootfs(vol)
                fs_path = btrfs if backend == "btrfs" else s.workdir
                name = lxc.create(template, f"{backend}{big}")
                if backend == "btrfs":
                    name = _lxc_on_btrfs(lxc, name, lxc_btrfs)
                if big:
                    _write_big(tree, big)
                    _write_big(_lxc_rootfs(lxc, name, lxc_btrfs if backend == "btrfs" else None), big)
                lxc_path = str(lxc_btrfs if backend == "btrfs" else lxc.path)
                cli_env = caisson.service_env if backend in FAST else None
                samples = _measure(e, ctid, lxc_path, name, backend, fs_path, args, caisson, cli_env)
                label = f"{backend}, {size_name}"
                fast = backend in FAST
                report.add(
                    f"snapshot, {label}",
                    samples["snap_ms"],
                    samples["lxc_snap_ms"],
                    limit=TIME_GOAL_MS if fast else None,
                )
                if cli_env is not None:
                    report.add(
                        f"snapshot via CLI (agent running) vs lxc-snapshot, {label}",
                        samples["cli_snap_ms"],
                        samples["lxc_snap_ms"],
                        goal=CLI_GOAL,
                    )
                report.add(
                    f"snapshot disk, {label}",
                    samples["snap_kib"],
                    samples["lxc_snap_kib"],
                    unit="KiB",
                    limit=DISK_GOAL_KIB if fast else None,
                )
                report.add(
                    f"rollback, {label}",
                    samples["rb_ms"],
                    samples["lxc_rb_ms"],
                    limit=ROLLBACK_GOAL_MS if fast else None,
                )
                report.add(
                    f"clone, {label}",
                    samples["clone_ms"],
                    samples["lxc_clone_ms"],
                    limit=TIME_GOAL_MS if fast else None,
                )
                report.add(
                    f"clone disk, {label}",
                    samples["clone_kib"],
                    samples["lxc_clone_kib"],
                    unit="KiB",
                    limit=DISK_GOAL_KIB if fast else None,
                )
                e.destroy(ctid, force=True)
                caisson.ctids.remove(ctid)
                run(["lxc-destroy", "-P", lxc_path, "-n", name, "-s", "-f"], check=False)
        report.notes.append(
            "extra disk: the drop of the file system's free space after a sync; btrfs counts free "
            "space by allocated chunk, so the few 16 KiB metadata nodes of a snapshot show as 0 "
            "on both sides."
        )
        report.notes.append(
            "LXC has no overlay snapshot: the overlay and dir-overlay rows compare with lxc-snapshot of a "
            "directory container (rsync copy) and lxc-copy -s -B overlay. dir-overlay is a plain dir storage "
            "with 'layout overlay' (Caisson's option)."
        )
        report.finish(args.json)


def _measure(e, ctid, lxc_path, name, backend, fs_path, args, caisson, cli_env) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {
        k: []
        for k in (
            "snap_ms",
            "cli_snap_ms",
            "snap_kib",
            "lxc_snap_ms",
            "lxc_snap_kib",
            "rb_ms",
            "lxc_rb_ms",
            "clone_ms",
            "clone_kib",
            "lxc_clone_ms",
            "lxc_clone_kib",
        )
    }
    e.snapshot(ctid, "base")
    run(["lxc-snapshot", "-P", lxc_path, "-n", name])  # snap0, the base
    lxc_clone_args = {
        "btrfs": ["-s"],
        "overlay": ["-s", "-B", "overlay"],
        "dir": [],
        "dir-overlay": ["-s", "-B", "overlay"],
    }[backend]
    for i in range(args.warmup + args.runs):
        keep = i >= args.warmup
        before = free_kib(fs_path)
        start = time.perf_counter_ns()
        e.snapshot(ctid, f"s{i}")
        elapsed = ms_since(start)
        used = before - free_kib(fs_path)
        e.delete_snapshot(ctid, f"s{i}")
        before_lxc = free_kib(fs_path)
        lxc_elapsed = timed_commands(["lxc-snapshot", "-P", lxc_path, "-n", name])
        lxc_used = before_lxc - free_kib(fs_path)
        run(["lxc-snapshot", "-P", lxc_path, "-n", name, "-d", "snap1"])
        if cli_env is not None:
            cli_elapsed = timed_commands(caisson.cli("snapshot", str(ctid), f"c{i}"), env=cli_env)
            e.delete_snapshot(ctid, f"c{i}")
            if keep:
                out["cli_snap_ms"].append(cli_elapsed)
        if keep:
            out["snap_ms"].append(elapsed)
            out["snap_kib"].append(max(used, 0.0))
            out["lxc_snap_ms"].append(lxc_elapsed)
            out["lxc_snap_kib"].append(max(lxc_used, 0.0))

        start = time.perf_counter_ns()
        e.rollback(ctid, "base")
        elapsed = ms_since(start)
        lxc_elapsed = timed_commands(["lxc-snapshot", "-P", lxc_path, "-n", name, "-r", "snap0"])
        if keep:
            out["rb_ms"].append(elapsed)
            out["lxc_rb_ms"].append(lxc_elapsed)

        newid = ctid + 1 + i
        before = free_kib(fs_path)
        start = time.perf_counter_ns()
        e.clone(ctid, newid, snapshot="base")
        elapsed = ms_since(start)
        used = before - free_kib(fs_path)
        e.destroy(newid)
        copy = f"{name}-c{i}"
        before_lxc = free_kib(fs_path)
        lxc_elapsed = timed_commands(["lxc-copy", "-P", lxc_path, "-n", name, "-N", copy, *lxc_clone_args])
        lxc_used = before_lxc - free_kib(fs_path)
        run(["lxc-destroy", "-P", lxc_path, "-n", copy, "-f"], check=False)
        if keep:
            out["clone_ms"].append(elapsed)
            out["clone_kib"].append(max(used, 0.0))
            out["lxc_clone_ms"].append(lxc_elapsed)
            out["lxc_clone_kib"].append(max(lxc_used, 0.0))
    run(["lxc-snapshot", "-P", lxc_path, "-n", name, "-d", "snap0"], check=False)
    return out


def _lxc_rootfs(lxc: LxcSide, name: str, btrfs_path) -> str:
    return str((btrfs_path or lxc.path) / name / "rootfs")


def _lxc_on_btrfs(lxc: LxcSide, name: str, lxc_btrfs) -> str:
    """Move an LXC container made in the side's lxcpath onto the btrfs, its rootfs a subvolume."""
    source = lxc.path / name
    target = lxc_btrfs / name
    target.mkdir(mode=0o711)
    subvolume_create(target / "rootfs")
    run(["cp", "-a", f"{source}/rootfs/.", f"{target}/rootfs/"])
    text = (source / "config").read_text().replace(f"dir:{source}/rootfs", f"btrfs:{target}/rootfs")
    write_atomic(target / "config", text, mode=0o644)
    run(["rm", "-rf", str(source)])
    lxc.names.remove(name)
    return name


def _write_big(tree, mib: int) -> None:
    path = os.path.join(str(tree), "root", "big")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    run(["dd", "if=/dev/urandom", f"of={path}", "bs=1M", f"count={mib}", "conv=fsync"])
    os.chown(path, 100000, 100000)


if __name__ == "__main__":
    entry(main)
