"""One benchmark run's temp dir, templates and clean-ups, torn down on exit, error, Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from paths import DEBIAN_GLOB, LXC_IDMAP, TEMPLATE_CACHE

from engine import syscalls as sc

if TYPE_CHECKING:
    from sides import CaissonSide, LxcSide

# ---- the session: templates, temp dir, clean-up -------------------------------------------------------


class Session:
    """One benchmark run's temp dir and clean-ups; ``with Session(name, args) as s:``."""

    def __init__(self, name: str, args: argparse.Namespace):
        self.name = name
        self.args = args
        self.stack = contextlib.ExitStack()
        self.workdir: Path | None = None
        self.notes: list[str] = []
        self.lxc_unprivileged = not getattr(args, "lxc_privileged", False)
        self._old_handlers: dict[int, object] = {}

    def __enter__(self) -> Session:
        if os.geteuid() != 0:
            sys.exit("the benchmarks need root (containers of both kinds, cgroups)")
        for tool in ("lxc-start", "lxc-attach", "lxc-stop", "lxc-destroy"):
            if not shutil.which(tool):
                sys.exit(f"{tool} not found: install LXC 5 (see /work/shared/BENCH.md)")
        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[sig] = signal.signal(sig, _interrupt)
        try:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"caisson-bench-{self.name}-"))
            os.chmod(self.workdir, 0o711)  # an unprivileged LXC container's root must reach its rootfs
            self.stack.callback(shutil.rmtree, self.workdir, ignore_errors=True)
            self._tune_cgroups()
            if self.lxc_unprivileged:
                self._lxc_subids()
            else:
                self.notes.append("LXC side PRIVILEGED (--lxc-privileged): no id map, unlike Caisson's containers.")
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, *exc) -> None:
        # A second Ctrl-C must not cut the clean-up short.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _still_cleaning)
        try:
            self.stack.close()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            for sig, handler in self._old_handlers.items():
                signal.signal(sig, handler)
        if exc[0] is KeyboardInterrupt:
            print("\ninterrupted; everything the benchmark made is removed", file=sys.stderr)

    def _tune_cgroups(self) -> None:
        """The host as the node agent leaves it: cgroup moves without an RCU wait (engine.cgroups.tuning)."""
        from engine.cgroups import tuning

        if not tuning.wanted():
            self.notes.append(f"cgroup2 left as it is ({tuning.SETTING}=0): moves may wait for RCU.")
            return
        try:
            tuning.favor_dynamic_moves()
        except OSError as exc:
            self.notes.append(f"cgroup moves keep the kernel's default ({exc}).")
        else:
            self.notes.append(
                "cgroup2 has favordynmods, as the node agent sets it: cgroup moves (both sides') skip an RCU wait."
            )

    # LXC, run by root with newuidmap installed, insists that root own the mapped range in
    # /etc/subuid and /etc/subgid. When the host files lack it, give this process (and so
    # every lxc-* it runs) a private mount namespace in which they have it: the host's
    # files stay as they are.
    def _lxc_subids(self) -> None:
        wanted = f"root:{LXC_IDMAP.uid_base}:{LXC_IDMAP.count}"
        files = {"/etc/subuid": LXC_IDMAP.uid_base, "/etc/subgid": LXC_IDMAP.gid_base}
        if all(_covers(path, base, LXC_IDMAP.count) for path, base in files.items()) or not shutil.which("newuidmap"):
            self.notes.append("LXC side unprivileged (lxc.idmap u/g 0 100000 65536), as Caisson.")
            return
        try:
            os.unshare(os.CLONE_NEWNS)
            sc.mount(None, "/", None, sc.MS_REC | sc.MS_SLAVE)
            for path in files:
                copy = self.workdir / Path(path).name
                try:
                    text = Path(path).read_text()
                except FileNotFoundError:
                    text = ""
                copy.write_text(text + ("" if not text or text.endswith("\n") else "\n") + wanted + "\n")
                sc.mount(str(copy), path, None, sc.MS_BIND)
                self.stack.callback(_umount_quietly, path)
        except OSError as exc:
            self.lxc_unprivileged = False
            self.notes.append(
                f"LXC side PRIVILEGED: unprivileged LXC needs root:100000:65536 in /etc/subuid and "
                f"/etc/subgid, which the host lacks, and a private mount namespace failed ({exc})."
            )
            return
        self.notes.append(
            "LXC side unprivileged (lxc.idmap u/g 0 100000 65536), as Caisson. The host's "
            "/etc/subuid and /etc/subgid give root no range, which LXC's newuidmap requires, so the "
            "benchmark runs in a private mount namespace where they hold 'root:100000:65536'."
        )

    def pair(self, label: str) -> tuple[CaissonSide, LxcSide, int, str]:
        """Both sides with one container each from ``--template``: (caisson, lxc, ctid, LXC name)."""
        from sides import CaissonSide, LxcSide  # the sides need a session: imported when first asked

        template = self.template(self.args.template)
        caisson, lxc = CaissonSide(self), LxcSide(self)
        return caisson, lxc, caisson.create(template, f"bench-{label}"), lxc.create(template, label)

    def template(self, kind: str) -> Path:
        """The rootfs tarball both sides use: busybox built fresh (~0.1 s), Debian from the cache."""
        if kind == "busybox":
            from engine.builders.busybox import build_busybox

            return build_busybox(self.workdir / "templates")
        if kind == "debian":
            found = sorted(TEMPLATE_CACHE.glob(DEBIAN_GLOB))
            if found:
                return found[-1]
            from engine.builders.debian import build_debian

            print(f"building the Debian template into {TEMPLATE_CACHE} (about a minute)", file=sys.stderr)
            return build_debian(TEMPLATE_CACHE, progress=lambda _d, _t, m: print(f"  {m}", file=sys.stderr))
        raise ValueError(f"unknown template {kind}")


def _covers(path: str, base: int, count: int) -> bool:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in ("root", "0") and parts[1].isdigit() and parts[2].isdigit():
            start, length = int(parts[1]), int(parts[2])
            if start <= base and base + count <= start + length:
                return True
    return False


def _stop_process(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _umount_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        sc.umount(path, sc.MNT_DETACH)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _still_cleaning(signum, frame) -> None:
    with contextlib.suppress(OSError):
        os.write(2, b"\nstill cleaning up; please wait\n")
