#!/usr/bin/env python3
"""One table of every goal measured in a run: ``bench/summary.py bench/results/<timestamp>/``.

Reads the JSON each benchmark wrote (``--json``) and lists, per row that has a goal, what Caisson
measured, what the peer measured, the ratio, the goal and met or missed. Rows without a goal are
left to each script's own table. Exit code 0 whether goals are met or not: this reports, it judges
nothing for a build.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    text = f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return f"{text} {unit}".strip()


def rows_of(path: Path) -> list[list[str]]:
    """The goal rows of one result file, as table cells."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict):  # raw samples only (pve_api.py): no goal rows
        return []
    out = []
    for row in data.get("rows", []):
        if "goal_p95" in row:  # web.py: absolute p95 goals, no peer
            met = row["p95"] < row["goal_p95"]
            out.append(
                [
                    path.stem,
                    f"{row['metric']} (p95)",
                    _number(row["p95"], row["unit"]),
                    "—",
                    "—",
                    f"< {row['goal_p95']:g} {row['unit']}",
                    "met" if met else f"MISSED ({row['p95'] / row['goal_p95']:.1f}× the goal)",
                ]
            )
            continue
        goal = row.get("goal_text") or (f"≤ {row['goal']:g}×" if row.get("goal") is not None else None)
        if not goal or goal == "—":
            continue
        out.append(
            [
                path.stem,
                row["metric"],
                _number(row.get("measured", row["caisson"]["median"]), row["unit"]),
                _number(row["lxc"]["median"], row["unit"]),
                f"{row['ratio']['median']:.2f}×",
                goal,
                row["verdict"],
            ]
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a directory of benchmark JSON files (bench/results/<timestamp>)")
    args = parser.parse_args(argv)
    files = sorted(args.results.glob("*.json"))
    if not files:
        print(f"error: no benchmark results (*.json) in {args.results}", file=sys.stderr)
        return 2
    head = ["benchmark", "metric", "Caisson", "peer (median)", "ratio (median)", "goal", ""]
    body = [cells for path in files for cells in rows_of(path)]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    for line in [head, ["-" * w for w in widths], *body]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    met = sum(cells[-1] == "met" for cells in body)
    print(f"\n{met} of {len(body)} goals met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
