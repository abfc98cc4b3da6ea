"""Print, per peer fixture set, how many cases are identical, expected-different (xfail) or refused.

    .venv/bin/python -m tests.engine.fixture_counts

Runs the peer-fixture test modules with pytest and counts the outcome of each case: passed is
identical; xfailed is expected-different (an explicit, reasoned expected failure); a failure whose
error is a ValidationError is refused; any other failure is different.  Exit status 1 if any case is
refused or different.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# test module::function -> the fixture set its cases belong to
SETS = {
    "test_pve_config_fixtures.py::test_round_trip_byte_for_byte_with_proxmox_digest": (
        "pve-container snapshot files: parse -> render"
    ),
    "test_pve_config_fixtures.py::test_operation_gives_proxmox_file": (
        "pve-container snapshot operations (prepare/commit/create/delete/rollback)"
    ),
    "test_calendar_events_fixtures.py::test_next_event": "calendar-events.json: next",
    "test_calendar_events_fixtures.py::test_never_fires": "calendar-events.json: never",
    "test_calendar_events_fixtures.py::test_valid": "calendar-events.json: valid",
    "test_calendar_events_fixtures.py::test_invalid_is_refused": "calendar-events.json: invalid",
}
OUTCOMES = ("identical", "expected-different", "refused", "different")


class _Collector:
    def __init__(self) -> None:
        self.counts: dict[str, Counter] = defaultdict(Counter)

    def pytest_runtest_logreport(self, report) -> None:
        if report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
            return
        path, _, rest = report.nodeid.partition("::")
        name = f"{Path(path).name}::{rest.split('[')[0]}"
        if name not in SETS:
            return
        if hasattr(report, "wasxfail"):
            outcome = "expected-different"
        elif report.passed:
            outcome = "identical"
        elif "ValidationError" in str(report.longrepr):
            outcome = "refused"
        else:
            outcome = "different"
        self.counts[SETS[name]][outcome] += 1


def main() -> int:
    collector = _Collector()
    modules = sorted({str(ROOT / "tests" / "engine" / key.split("::")[0]) for key in SETS})
    pytest.main(["-q", "-p", "no:cacheprovider", "--no-header", "-o", "addopts=", *modules], plugins=[collector])
    width = max(len(s) for s in SETS.values())
    print(f"\n{'fixture set':<{width}}  " + "  ".join(OUTCOMES))
    for name in dict.fromkeys(SETS.values()):
        row = collector.counts.get(name, Counter())
        print(f"{name:<{width}}  " + "  ".join(f"{row[o]:>{len(o)}}" for o in OUTCOMES))
    bad = sum(c["refused"] + c["different"] for c in collector.counts.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
