"""What the benchmarks share: statistics, the result table, and the two sides (Caisson and LXC).

Method (``/work/shared/BENCH.md``): both sides run in one process on the same
template, alternating A B A B after warm-ups; each row quotes the median with
min and max, and the ratio Caisson/LXC is taken pair by pair (sample i of
Caisson over sample i of LXC), then summarised the same way.

Everything a benchmark makes (containers of both kinds, their cgroups, temp
dirs) is registered with a :class:`Session` as soon as it exists and is torn
down on exit, error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import math
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from engine import inits  # noqa: E402
from engine import syscalls as sc  # noqa: E402
from engine.idmap import IdMap  # noqa: E402
from engine.lifecycle import Engine  # noqa: E402
from engine.unpack import extract_archive  # noqa: E402

TEMPLATE_CACHE = Path.home() / ".cache" / "caisson" / "templates"
DEBIAN_GLOB = "debian-12-standard_*_amd64.tar.zst"
CGROUP_PARENT = "caisson-bench"  # the in-process engine's containers
CLI_CGROUP_PARENT = "caisson"  # what ``python -m engine`` uses (the CLI has no option for it)
LXC_IDMAP = IdMap(100000, 100000, 65536)
MEMORY_MB = 256
LXCFS_HOOKS = "/usr/share/lxc/config/common.conf.d/00-lxcfs.conf"


# ---- statistics --------------------------------------------------------------------------------


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def pair_ratios(a: list[float], b: list[float]) -> list[float]:
    """a[i] / b[i] for each pair; a zero over a zero is 0 (nothing over nothing), x/0 is infinite."""
    return [(x / y) if y else (0.0 if not x else math.inf) for x, y in zip(a, b, strict=True)]


def _num(value: float) -> str:
    if math.isinf(value):
        return "inf"
    size = abs(value)
    if size == 0:
        return "0"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def fmt(values: list[float]) -> str:
    s = summary(values)
    return f"{_num(s['median'])} [{_num(s['min'])}–{_num(s['max'])}]"


# ---- timing --------------------------------------------------------------------------------------


def ms_since(start_ns: int) -> float:
    return (time.perf_counter_ns() - start_ns) / 1e6


def run(
    argv: list[str], env: dict[str, str] | None = None, check: bool = True, quiet: bool = True
) -> subprocess.CompletedProcess:
    """One command, stdout discarded, stderr kept for the error message."""
    result = subprocess.run(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL if quiet else None, stderr=subprocess.PIPE
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(argv)} exited with {result.returncode}: {result.stderr.decode(errors='replace').strip()}"
        )
    return result


def timed_commands(*argvs: list[str], env: dict[str, str] | None = None) -> float:
    """Wall time in ms of running the commands one after the other (each must succeed)."""
    start = time.perf_counter_ns()
    results = [
        subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for argv in argvs
    ]
    elapsed = ms_since(start)
    for argv, result in zip(argvs, results, strict=True):
        if result.returncode != 0:
            raise RuntimeError(
                f"{shlex.join(argv)} exited with {result.returncode}: {result.stderr.decode(errors='replace').strip()}"
            )
    return elapsed


def alternate(
    steps: list[tuple[str, Callable[[], float]]], runs: int, warmup: int, label: str = "", idle: float = 0.0
) -> dict[str, list[float]]:
    """Call the steps in order (A B A B ...), warmup + runs times; keep the samples after the warm-ups.

    ``idle`` seconds of pause before each step let the kernel settle, as between a node's sporadic
    requests: on cgroup v1 the first process moved into a cgroup after a quiet spell waits for an
    RCU grace period (cgroup_threadgroup_rwsem), 5-20 ms on a 2-vCPU VM, against ~0.02 ms back to back.
    """
    samples: dict[str, list[float]] = {name: [] for name, _ in steps}
    total = warmup + runs
    for i in range(total):
        for name, step in steps:
            if idle:
                time.sleep(idle)
            value = step()
            if i >= warmup:
                samples[name].append(value)
        _progress(f"{label} {i + 1}/{total}" + (" (warm-up)" if i < warmup else ""))
    _progress("")
    return samples


def _progress(text: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" + text)
        sys.stderr.flush()


def hyperfine(
    commands: list[tuple[str, str, str | None]],
    runs: int,
    warmup: int,
    workdir: Path,
    env: dict[str, str] | None = None,
    shell: bool = True,
) -> dict[str, list[float]]:
    """Whole commands through hyperfine: (name, command, prepare command or None) -> samples in ms.

    hyperfine runs each command's block in turn (not A B A B); its figures are a cross-check.
    Without ``shell`` the commands run directly (``-N``) and must be plain words.
    """
    out = workdir / "hyperfine.json"
    argv = [
        "hyperfine",
        "--style",
        "none",
        "--warmup",
        str(warmup),
        "--runs",
        str(runs),
        "--export-json",
        str(out),
        *([] if shell else ["-N"]),
    ]
    for name, command, prepare in commands:
        argv += ["--command-name", name]
        if prepare is not None:
            argv += ["--prepare", prepare]
        argv.append(command)
    run(argv, env=env)
    data = json.loads(out.read_text())
    out.unlink()
    return {r["command"]: [t * 1e3 for t in r["times"]] for r in data["results"]}


def reap_children() -> None:
    """Collect exited children: container inits and LXC monitors are re-parented to this process
    (the in-process engine makes it a child subreaper, as the node agent is)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def engine_version() -> str:
    """The commit the engine was measured at, with ``+changes`` if engine/ differs from it."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "engine"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


# ---- the result table ------------------------------------------------------------------------------


@dataclass
class Row:
    metric: str
    unit: str
    caisson: list[float]
    lxc: list[float]
    goal: float | None = None
    note: str = ""
    limit: float | None = None  # an absolute goal instead: Caisson's `statistic` at most this, in the row's unit
    statistic: str = "median"  # what `limit` bounds: "median" or "p99"
    floor: float | None = None  # an absolute goal the other way: Caisson's median at least this (a throughput)

    @property
    def ratios(self) -> list[float]:
        return pair_ratios(self.caisson, self.lxc)

    def measured(self) -> float:
        """Caisson's value that an absolute goal is judged on."""
        if self.statistic == "p99":
            ordered = sorted(self.caisson)
            return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
        return statistics.median(self.caisson)

    def goal_text(self) -> str:
        if self.goal is not None:
            return f"≤ {self.goal:g}×"
        if self.limit is not None:
            return f"Caisson {self.statistic} ≤ {self.limit:g} {self.unit}"
        if self.floor is not None:
            return f"Caisson ≥ {self.floor:g} {self.unit}"
        return "—"

    def verdict(self) -> str:
        if self.limit is not None:
            value = self.measured()
            return "met" if value <= self.limit else f"MISSED ({value / self.limit:.1f}× the goal)"
        if self.floor is not None:
            value = self.measured()
            return "met" if value >= self.floor else f"MISSED ({value / self.floor:.2f} of the goal)"
        if self.goal is None:
            return ""
        median = statistics.median(self.ratios)
        if median <= self.goal:
            return "met"
        return f"MISSED ({median / self.goal:.1f}× the goal)"


@dataclass
class Report:
    title: str
    settings: dict
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    against: str = "LXC"  # what the second column measures

    def __post_init__(self) -> None:
        self.settings = {"engine": engine_version(), **self.settings}

    def add(
        self,
        metric: str,
        caisson: list[float],
        lxc: list[float],
        unit: str = "ms",
        goal: float | None = None,
        note: str = "",
        limit: float | None = None,
        statistic: str = "median",
        floor: float | None = None,
    ) -> Row:
        row = Row(metric, unit, list(caisson), list(lxc), goal, note, limit, statistic, floor)
        self.rows.append(row)
        return row

    def render(self) -> str:
        head = [
            "metric",
            "Caisson median [min–max]",
            f"{self.against} median [min–max]",
            f"Caisson/{self.against} (pairwise)",
            "goal",
            "",
        ]
        body = []
        for r in self.rows:
            body.append(
                [
                    f"{r.metric} ({r.unit})",
                    fmt(r.caisson),
                    fmt(r.lxc),
                    fmt(r.ratios),
                    r.goal_text(),
                    r.verdict(),
                ]
            )
        widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
        lines = [self.title, ", ".join(f"{k}: {v}" for k, v in self.settings.items()), ""]
        for line in [head, ["-" * w for w in widths], *body]:
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        notes = [f"{r.metric}: {r.note}" for r in self.rows if r.note] + self.notes
        if notes:
            lines.append("")
            lines += [f"* {n}" for n in notes]
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {
            "title": self.title,
            "settings": self.settings,
            "notes": self.notes,
            "host": {"kernel": os.uname().release, "cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "rows": [
                {
                    "metric": r.metric,
                    "unit": r.unit,
                    "goal": r.goal,
                    "goal_text": r.goal_text(),
                    "measured": r.measured(),
                    "verdict": r.verdict(),
                    "note": r.note,
                    **({"limit": r.limit, "statistic": r.statistic} if r.limit is not None else {}),
                    **({"floor": r.floor} if r.floor is not None else {}),
                    "caisson": {"samples": r.caisson, **summary(r.caisson)},
                    "lxc": {"samples": r.lxc, **summary(r.lxc)},
                    "ratio": {"samples": r.ratios, **summary(r.ratios)},
                }
                for r in self.rows
            ],
        }

    def finish(self, json_path: Path | None) -> None:
        print(self.render())
        if json_path is not None:
            json_path = Path(json_path)
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(self.as_dict(), indent=2) + "\n")
            print(f"\nraw samples: {json_path}")


def entry(main: Callable[[], None]) -> None:
    """Run a benchmark's main; Ctrl-C or SIGTERM end it quietly (the session has cleaned up)."""
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)


# ---- command line -----------------------------------------------------------------------------------


def parser(
    description: str,
    runs: int | None = None,
    warmup: int = 3,
    idle: float = 0.0,
    idle_help: str = "pause before each sample, so that each meets a quiet kernel as sporadic requests do",
    templates: Iterable[str] = ("busybox", "debian"),
) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=description,
        epilog="Needs root, LXC 5 and the engine's dependencies. Every container, "
        "cgroup and temp dir it makes is removed on exit, error or Ctrl-C.",
    )
    if runs is not None:
        p.add_argument("--runs", type=int, default=runs, help="measured samples per side (default %(default)s)")
        p.add_argument("--warmup", type=int, default=warmup, help="discarded warm-up rounds (default %(default)s)")
        p.add_argument("--idle", type=float, default=idle, metavar="SECONDS", help=f"{idle_help} (default %(default)s)")
    p.add_argument(
        "--template",
        choices=list(templates),
        default="busybox",
        help="rootfs both sides boot (default %(default)s); debian reuses the cached "
        f"{TEMPLATE_CACHE}/{DEBIAN_GLOB} or builds it there (~1 min)",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the raw samples and summaries here")
    p.add_argument(
        "--lxc-privileged",
        action="store_true",
        help="run the LXC side privileged (default: unprivileged with u/g 0 100000 65536, as Caisson)",
    )
    p.add_argument(
        "--lxc-lxcfs-hooks",
        action="store_true",
        help="keep the lxcfs hooks Debian adds to every LXC container (default: cleared; the "
        "post-stop one sleeps 0.5 s)",
    )
    return p


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


# ---- Caisson's side --------------------------------------------------------------------------------------


class CaissonSide:
    """An engine with its own state and run dirs, held for the whole run like the node agent's.

    Containers started through the CLI (``python -m engine``) get their cgroups under the CLI's
    default parent ``caisson``; they are stopped by a second in-process engine with that parent.
    """

    def __init__(self, session: Session):
        base = session.workdir / "caisson"
        self.root, self.run_dir = base / "state", base / "run"
        self.ctids: list[int] = []
        self.cli_started: set[int] = set()
        self.engine: Engine | None = None
        self._cli_engine: Engine | None = None
        session.stack.callback(self.cleanup)
        self.engine = Engine(root=self.root, run_dir=self.run_dir, cgroup_parent=CGROUP_PARENT, reaper=True)
        # The CLI runs as an installed package would: with its bytecode cached (here in the temp dir,
        # so nothing is written to the source tree), whatever PYTHONDONTWRITEBYTECODE says.
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
            "PYTHONPYCACHEPREFIX": str(session.workdir / "pycache"),
        }
        self._bytecode_note = bool(self.env.pop("PYTHONDONTWRITEBYTECODE", None))
        self.env["CAISSON_CLI_SOCKET"] = ""  # in-process unless a row asks for the service (below)
        self._session = session
        self._service_env: dict[str, str] | None = None

    @property
    def service_env(self) -> dict[str, str]:
        """The CLI's environment with the node's CLI service running, as when the agent runs (started once)."""
        if self._service_env is None:
            sock = self.run_dir / "cli.sock"
            env = {**self.env, "CAISSON_CLI_SOCKET": str(sock)}
            service = subprocess.Popen(
                [sys.executable, "-m", "engine.cli.service", "--socket", str(sock), "--with-parent"],
                env=env,
                stderr=subprocess.DEVNULL,
            )
            self._session.stack.callback(_stop_process, service)
            deadline = time.monotonic() + 30
            while not sock.exists():
                if service.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the CLI service did not start")
                time.sleep(0.02)
            self._service_env = env
        return self._service_env

    @property
    def cli_engine(self) -> Engine:
        if self._cli_engine is None:
            self._cli_engine = Engine(
                root=self.root, run_dir=self.run_dir, cgroup_parent=CLI_CGROUP_PARENT, reaper=True
            )
        return self._cli_engine

    def _free_ctid(self) -> int:
        """A container ID whose cgroup exists under neither parent (other engines may share 'caisson')."""
        ctid = 900_000_000 + (os.getpid() % 90_000) * 1000 + len(self.ctids)
        while any(
            os.path.exists(p)
            for p in glob.glob(f"/sys/fs/cgroup/*/{CLI_CGROUP_PARENT}/{ctid}")
            + glob.glob(f"/sys/fs/cgroup/*/{CGROUP_PARENT}/{ctid}")
        ):
            ctid += 1
        return ctid

    def create(self, template: Path, hostname: str, options: dict[str, str] | None = None) -> int:
        ctid = self._free_ctid()
        self.ctids.append(ctid)
        self.engine.create(ctid, template, {"hostname": hostname, "memory": str(MEMORY_MB), **(options or {})})
        return ctid

    def cli(self, *args: str) -> list[str]:
        if self._bytecode_note:
            self._bytecode_note = False
            self._session.notes.append(
                "CLI: PYTHONDONTWRITEBYTECODE is set here; the CLI runs with it unset and "
                "PYTHONPYCACHEPREFIX in the temp dir, i.e. with cached bytecode as when "
                "installed (compiling the engine from source adds about 55 ms to every call)."
            )
        return [sys.executable, "-m", "engine", "--root", str(self.root), "--run-dir", str(self.run_dir), *args]

    def cli_shell(self, *args: str) -> str:
        return shlex.join(self.cli(*args))

    def mark_cli_started(self, ctid: int) -> None:
        self.cli_started.add(ctid)

    def running(self, ctid: int) -> bool:
        return self.engine.status(ctid, stats=False).status == "running"

    def stop(self, ctid: int) -> None:
        """Hard stop (not timed), by the engine whose cgroup parent the container was started under."""
        engine = self.cli_engine if ctid in self.cli_started else self.engine
        if self.running(ctid):
            engine.stop(ctid)
        self.cli_started.discard(ctid)
        reap_children()

    def cleanup(self) -> None:
        for ctid in self.ctids:
            with contextlib.suppress(Exception):
                if ctid in self.cli_started and self.running(ctid):
                    self.cli_engine.stop(ctid)
            with contextlib.suppress(Exception):
                if self.engine is not None:
                    self.engine.destroy(ctid, force=True)
            for engine in (self.engine, self._cli_engine):
                if engine is not None:
                    with contextlib.suppress(Exception):
                        if engine.cgroups.exists(str(ctid)):
                            engine.cgroups.kill(str(ctid))
                            engine.cgroups.destroy(str(ctid))
        reap_children()
        # The bench parent is ours alone; the CLI's 'caisson' parent may be shared, so it stays.
        for path in glob.glob(f"/sys/fs/cgroup/*/{CGROUP_PARENT}") + glob.glob(f"/sys/fs/cgroup/{CGROUP_PARENT}"):
            with contextlib.suppress(OSError):
                os.rmdir(path)


# ---- LXC's side ------------------------------------------------------------------------------------------


class LxcSide:
    """LXC containers in a private lxcpath, each with its own copy of the template's rootfs."""

    def __init__(self, session: Session):
        self.path = session.workdir / "lxc"
        self.path.mkdir(mode=0o711)
        self.unprivileged = session.lxc_unprivileged
        self.lxcfs_hooks = getattr(session.args, "lxc_lxcfs_hooks", False)
        self.names: list[str] = []
        session.stack.callback(self.cleanup)
        if self.lxcfs_hooks:
            session.notes.append(
                "LXC keeps Debian's lxcfs hooks (common.conf.d/00-lxcfs.conf: a mount hook and a "
                "post-stop hook that sleeps 0.5 s)."
            )
        elif os.path.exists(LXCFS_HOOKS):
            session.notes.append(
                f"LXC runs without the lxcfs hooks that {LXCFS_HOOKS} adds to every container (a "
                "mount hook, and a post-stop hook that sleeps 0.5 s, which lxc-stop waits for); "
                "--lxc-lxcfs-hooks keeps them."
            )

    def create(self, template: Path, name: str, net: Iterable[str] = ("lxc.net.0.type = empty",)) -> str:
        """Extract the template (ids shifted like Caisson's when unprivileged) and write the config
        (``net``: the lxc.net.* lines; by default no network)."""
        name = f"cb{os.getpid()}-{name}"
        cdir = self.path / name
        cdir.mkdir(mode=0o711)
        self.names.append(name)
        rootfs = cdir / "rootfs"
        extract_archive(template, rootfs, LXC_IDMAP if self.unprivileged else None)
        init = inits.detect(rootfs) or inits.SYSVINIT
        lines = [
            "lxc.include = /usr/share/lxc/config/common.conf",
            f"lxc.rootfs.path = dir:{rootfs}",
            f"lxc.uts.name = {name}",
            *net,
            # The same memory limit and power-off signal Caisson gives its containers.
            f"lxc.cgroup.memory.limit_in_bytes = {MEMORY_MB << 20}",
            f"lxc.signal.halt = {int(init.poweroff_signal)}",
        ]
        if not self.lxcfs_hooks:
            # Debian's lxcfs package adds a mount hook and a post-stop hook ("sleep 0.5s") to every
            # container through common.conf.d; lxc-stop waits for it. Without lxcfs running they do
            # nothing useful, so LXC is measured without them unless asked.
            lines += ["lxc.hook.mount =", "lxc.hook.post-stop ="]
        if self.unprivileged:
            lines += [f"lxc.idmap = {line}" for line in LXC_IDMAP.lxc_lines()]
        (cdir / "config").write_text("\n".join(lines) + "\n")
        return name

    def cmd(self, tool: str, name: str, *rest: str) -> list[str]:
        return [tool, "-P", str(self.path), "-n", name, *rest]

    def shell(self, tool: str, name: str, *rest: str) -> str:
        return shlex.join(self.cmd(tool, name, *rest))

    def start_argv(self, name: str) -> list[str]:
        return self.cmd("lxc-start", name, "-d")

    def attach_argv(self, name: str, *command: str) -> list[str]:
        return self.cmd("lxc-attach", name, "--", *(command or ("true",)))

    def stop(self, name: str) -> None:
        """Hard stop (not timed)."""
        self._reaping(self.cmd("lxc-stop", name, "-k"))

    @staticmethod
    def _reaping(argv: list[str], timeout: float = 30.0) -> None:
        """Run an lxc-* command that waits for a container's end, reaping our children meanwhile.

        Processes attached with lxc-attach are re-parented to this process (a child subreaper) when
        their lxc-attach exits. A killed container's init waits in the kernel until every process
        of its pid namespace is reaped, so an unreaped one (a zombie whose parent is this process)
        would hold ``lxc-stop`` and ``lxc-destroy`` forever. Reap while waiting, and give up after
        ``timeout`` seconds rather than hang.
        """
        reap_children()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while process.poll() is None:
            reap_children()
            if time.monotonic() > deadline:
                process.kill()
                process.wait()
                print(f"warning: {shlex.join(argv)} did not finish in {timeout:g} s; killed", file=sys.stderr)
                break
            time.sleep(0.02)
        reap_children()

    def cleanup(self) -> None:
        for name in self.names:
            self._reaping(self.cmd("lxc-stop", name, "-k"))
            self._reaping(self.cmd("lxc-destroy", name, "-f"))
            # What LXC leaves when a start fails half way.
            for top in glob.glob(f"/sys/fs/cgroup/*/lxc.*.{name}") + glob.glob(f"/sys/fs/cgroup/lxc.*.{name}"):
                for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
                    with contextlib.suppress(OSError):
                        os.rmdir(dirpath)
        shutil.rmtree(self.path, ignore_errors=True)
