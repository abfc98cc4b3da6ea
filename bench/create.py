#!/usr/bin/env python3
"""Create a container from a template: Engine.create against lxc-create with the same tarball extracted.

For each template (busybox, built fresh; Debian, from the cache or built there) both sides make a new
container on the same file system, alternating, the template file in the page cache (as right after a
download) and the disk synced before each sample:

* Caisson: ``Engine.create(ctid, template)`` in a running process, as the node agent calls it (the
  config written, the tarball extracted with every member checked, ids shifted into the container's
  user namespace, the rootfs renamed into place, its init detected); and the CLI,
  ``python -m engine create CTID TEMPLATE``, as a whole command.
* LXC: ``lxc-create -t none`` (the container's directory and config), then what LXC's ``download``
  template does with the rootfs tarball it fetched: ``mkdir rootfs``, ``tar -xp --numeric-owner
  --exclude=./dev/*`` into it (here ``zstd -dc |`` in front, the template being a .tar.zst) and the
  ``lxc.rootfs.path`` line appended to the config.

Why not ``lxc-create -t local``: it wants a metadata tarball beside the rootfs and only adds the
unpacking of that; ``-t none`` plus the extraction is the same work with the same tarball, and it
keeps both sides on one input. LXC's side runs as root without an id shift: for an unprivileged
container its download template extracts inside a user namespace, where the kernel maps the ids at
no extra cost, so the timed work is the same. The containers are destroyed after each sample
(not timed). No goal yet; the figures are reported.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

from common import CaissonSide, Report, Session, alternate, entry, ms_since, parser, reap_children, run


def measure(
    kind: str,
    template: Path,
    caisson: CaissonSide,
    lxcpath: Path,
    lxc_conf: Path,
    names: list[str],
    args,
    report: Report,
) -> None:
    """Alternate the three ways of creating a container from ``template``; add their rows to ``report``."""
    counter = [0]

    def synced() -> None:
        subprocess.run(["sync"], check=True)
        template.read_bytes()  # in the page cache, whatever the previous sample evicted

    def in_process() -> float:
        synced()
        ctid = caisson._free_ctid()
        start = time.perf_counter_ns()
        caisson.engine.create(ctid, template, {"hostname": "bench"})
        elapsed = ms_since(start)
        caisson.engine.destroy(ctid)
        return elapsed

    def cli() -> float:
        synced()
        ctid = caisson._free_ctid()
        argv = caisson.cli("create", str(ctid), str(template), "--hostname", "bench")
        start = time.perf_counter_ns()
        run(argv)
        elapsed = ms_since(start)
        caisson.engine.destroy(ctid)
        return elapsed

    def lxc() -> float:
        synced()
        counter[0] += 1
        name = f"cb-{kind}-{counter[0]}"
        cdir = lxcpath / name
        rootfs = cdir / "rootfs"
        script = " && ".join(
            [
                shlex.join(["lxc-create", "-P", str(lxcpath), "-n", name, "-t", "none", "-f", str(lxc_conf)]),
                shlex.join(["mkdir", "-m", "0755", str(rootfs)]),
                f"zstd -dc {shlex.quote(str(template))} | tar -xp --numeric-owner --exclude=./dev/* "
                f"-C {shlex.quote(str(rootfs))} -f -",
                f"echo {shlex.quote(f'lxc.rootfs.path = dir:{rootfs}')} >> {shlex.quote(str(cdir / 'config'))}",
            ]
        )
        names.append(name)
        start = time.perf_counter_ns()
        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        elapsed = ms_since(start)
        if result.returncode != 0:
            raise RuntimeError(f"LXC side failed: {result.stderr.decode(errors='replace').strip()}")
        run(["lxc-destroy", "-P", str(lxcpath), "-n", name, "-f"])
        names.remove(name)
        return elapsed

    samples = alternate(
        [("caisson", in_process), ("cli", cli), ("lxc", lxc)], args.runs, args.warmup, label=f"create {kind}"
    )
    report.add(f"{kind}: Engine.create (in process) vs lxc-create -t none + tar -x", samples["caisson"], samples["lxc"])
    report.add(f"{kind}: python -m engine create vs lxc-create -t none + tar -x", samples["cli"], samples["lxc"])
    report.notes.append(f"{kind}: {template.name}, {template.stat().st_size / 1e6:.1f} MB")


def main() -> None:
    p = parser(__doc__.splitlines()[0], runs=7, warmup=1)
    p.add_argument(
        "--templates",
        default="busybox,debian",
        help="comma-separated templates to measure in this run (default %(default)s); --template is ignored",
    )
    args = p.parse_args()
    with Session("create", args) as s:
        caisson = CaissonSide(s)
        lxcpath = Path(s.workdir) / "lxc"
        lxcpath.mkdir(mode=0o711)
        lxc_conf = Path(s.workdir) / "lxc-default.conf"
        lxc_conf.write_text("lxc.net.0.type = empty\n")
        names: list[str] = []

        def destroy_lxc() -> None:
            for name in names:
                run(["lxc-destroy", "-P", str(lxcpath), "-n", name, "-f"], check=False)
            reap_children()

        s.stack.callback(destroy_lxc)
        report = Report(
            "create a container from a template, warm template file",
            {"runs": args.runs, "order": "Caisson, Caisson CLI, LXC …"},
            against="LXC",
        )
        for kind in [k.strip() for k in args.templates.split(",") if k.strip()]:
            measure(kind, s.template(kind), caisson, lxcpath, lxc_conf, names, args, report)
        report.notes.append(
            "Caisson unprivileged (ids shifted to 100000 as it extracts, members checked); LXC "
            "extracts as root (an unprivileged download template extracts in a user namespace, "
            "where the kernel maps ids for free)."
        )
        report.finish(args.json)


if __name__ == "__main__":
    entry(main)
