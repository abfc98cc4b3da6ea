"""Calendar events against Proxmox's own test tables (../shared/peer-fixtures/calendar-events.json).

proxmox-time's and pve-common's cases, in UTC: the next event after a given time, events that never
fire, and events that must parse or must be refused.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.backup.schedule import parse_calendar_event
from engine.errors import ValidationError

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "peer-fixtures" / "calendar-events.json"
CASES = json.loads(DATA.read_text()) if DATA.is_file() else {"next": [], "never": [], "valid": [], "invalid": []}

pytestmark = pytest.mark.skipif(not DATA.is_file(), reason=f"peer fixtures not found at {DATA}")


def _next(event: str, last: int) -> int | None:
    found = parse_calendar_event(event).next_after(datetime.fromtimestamp(last, UTC), UTC)
    return None if found is None else int(found.timestamp())


@pytest.mark.parametrize("case", CASES["next"], ids=[f"{c['event']}@{c['last']}" for c in CASES["next"]])
def test_next_event(case):
    assert _next(case["event"], case["last"]) == case["next"]


@pytest.mark.parametrize("case", CASES["never"], ids=[c["event"] for c in CASES["never"]])
def test_never_fires(case):
    assert _next(case["event"], case["last"]) is None


@pytest.mark.parametrize("event", CASES["valid"])
def test_valid(event):
    parse_calendar_event(event)


@pytest.mark.parametrize("event", CASES["invalid"], ids=[repr(e) for e in CASES["invalid"]])
def test_invalid_is_refused(event):
    with pytest.raises(ValidationError, match="schedule"):
        parse_calendar_event(event)
