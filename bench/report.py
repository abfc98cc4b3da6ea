"""The result table every benchmark prints (and writes as JSON), and the command line they share."""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from paths import DEBIAN_GLOB, TEMPLATE_CACHE
from timing import engine_version, fmt, pair_ratios, summary

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
