"""Statistics and timing shared by the benchmarks: medians, pairwise ratios, alternating runs, hyperfine."""

from __future__ import annotations

import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from paths import REPO

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
