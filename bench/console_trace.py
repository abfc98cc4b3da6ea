#!/usr/bin/env python3
"""Where a console echo's time goes: the per-stage sums of a ``CAISSON_CONSOLE_TRACE`` file.

Run ``bench/console.py`` (or any console use) with ``CAISSON_CONSOLE_TRACE=FILE``
in the environment (the web server and the relay inherit it), then
``python bench/console_trace.py FILE``: for each hop between two stamps
(``tasks.console_protocol.TRACE_STAGES``), its p50, p90, p99 and max in ms, and the
same for the whole consumer-to-socket span. Only echoes whose trace went the
whole way are counted; the client's own hops (to the server's socket and
back) are outside the trace, and are the echo's total less its span.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tasks.console_protocol import TRACE_STAGES as STAGES  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def hops(lines) -> dict[str, list[float]]:
    """Milliseconds per hop ("a → b") over the complete traces among ``lines`` (JSON text)."""
    spans: dict[str, list[float]] = {f"{a} → {b}": [] for a, b in zip(STAGES, STAGES[1:], strict=False)}
    spans["whole span"] = []
    for line in lines:
        stamps = dict(json.loads(line))
        if list(stamps) != list(STAGES):
            continue
        for a, b in zip(STAGES, STAGES[1:], strict=False):
            spans[f"{a} → {b}"].append((stamps[b] - stamps[a]) / 1e6)
        spans["whole span"].append((stamps[STAGES[-1]] - stamps[STAGES[0]]) / 1e6)
    return spans


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file", type=Path)
    p.add_argument("--skip", type=int, default=0, help="leave out the first N traces (warm-up)")
    args = p.parse_args()
    lines = args.file.read_text().splitlines()[args.skip :]
    spans = hops(lines)
    print(f"{len(spans['whole span'])} complete traces of {len(lines)}")
    print(f"{'hop':40} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}  (ms)")
    for name, values in spans.items():
        if values:
            figures = " ".join(f"{pct(values, q):8.3f}" for q in (50, 90, 99)) + f" {max(values):8.3f}"
            print(f"{name:40} {figures}")


if __name__ == "__main__":
    main()
