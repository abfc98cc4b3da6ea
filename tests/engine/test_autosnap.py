"""Scheduled snapshots' names (Incus's pattern), expiry (Incus's units) and retention (Proxmox's keep-*)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from engine.autosnap import check_pattern, expires_at, marker, owned, parse_expiry, snapshot_name, to_remove
from engine.backup.prune import PruneOptions
from engine.errors import ValidationError

WHEN = datetime(2026, 1, 31, 2, 30, 0, tzinfo=UTC)


def test_numbered_pattern_takes_the_next_number_after_the_highest():
    assert snapshot_name("snap%d", WHEN, set()) == "snap0"
    assert snapshot_name("snap%d", WHEN, {"snap0", "snap7", "other3", "snapx"}) == "snap8"
    assert snapshot_name("auto-%d-x", WHEN, {"auto-2-x"}) == "auto-3-x"


def test_date_pattern_in_go_layout_and_a_taken_name_gets_a_number():
    pattern = 'daily-{{ creation_date|date:"2006-01-02_15-04" }}'
    assert snapshot_name(pattern, WHEN, set()) == "daily-2026-01-31_02-30"
    assert snapshot_name(pattern, WHEN, {"daily-2026-01-31_02-30"}) == "daily-2026-01-31_02-30-0"
    assert snapshot_name("{{creation_date|date:'Jan02'}}x", WHEN, set()) == "Jan31x"


@pytest.mark.parametrize("pattern", ["", "9lives%d", "a%db%d", "has space", 'x{{ creation_date|date:"2006/01" }}'])
def test_patterns_that_cannot_make_a_snapshot_name_are_refused(pattern):
    with pytest.raises(ValidationError) as caught:
        check_pattern(pattern)
    assert "pattern" in str(caught.value)


def test_expiry_units_as_incus():
    assert parse_expiry("") == []
    assert expires_at(WHEN, "") is None
    assert expires_at(WHEN, "90M") == WHEN + timedelta(minutes=90)
    assert expires_at(WHEN, "1w 2d 3H") == WHEN + timedelta(days=9, hours=3)
    assert expires_at(WHEN, "1m") == datetime(2026, 2, 28, 2, 30, tzinfo=UTC)  # the 31st -> February's last day
    assert expires_at(WHEN, "1y") == datetime(2027, 1, 31, 2, 30, tzinfo=UTC)
    for bad in ("2 days", "3x", "-1d", "d"):
        with pytest.raises(ValidationError, match="is not an amount with a unit"):
            parse_expiry(bad)


@dataclass
class Snap:
    name: str
    snaptime: int | None
    description: str


def test_only_the_policys_own_snapshots_expire_or_are_pruned():
    now = WHEN
    hour = 3600
    base = int(now.timestamp())
    snaps = [
        Snap("manual", base - 50 * hour, "taken by hand"),
        Snap("other", base - 50 * hour, marker(9, now - timedelta(days=1))),  # another policy's, expired
        Snap("old", base - 48 * hour, "note\n" + marker(3, now - timedelta(minutes=1))),  # expired
        Snap("a", base - 3 * hour, marker(3, None)),
        Snap("b", base - 2 * hour, marker(3, now + timedelta(days=1))),
        Snap("c", base - 1 * hour, marker(3, now + timedelta(days=1))),
    ]
    mine = owned(3, snaps)
    assert [s.name for s in mine] == ["old", "a", "b", "c"]
    removed = to_remove(101, mine, now, PruneOptions(keep_last=2))
    assert [n for n, _ in removed] == ["old", "a"]
    assert removed[0][1].startswith("expired at") and removed[1][1].startswith("retention")
    # No rule: only the expired one goes.
    assert [n for n, _ in to_remove(101, mine, now, PruneOptions())] == ["old"]
