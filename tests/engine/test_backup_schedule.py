"""Calendar events and cron lines: the next run from fixed times, in UTC and in a zone with DST."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from engine.backup.schedule import next_run, parse_calendar_event, parse_cron
from engine.errors import ValidationError

FRIDAY_NOON = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)  # a Friday
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ("mon..fri 02:00", "2026-03-09 02:00"),  # Friday's 02:00 has passed: Monday
        ("*/6:00", "2026-03-06 18:00"),
        ("sat 03:30", "2026-03-07 03:30"),
        ("daily", "2026-03-07 00:00"),
        ("weekly", "2026-03-09 00:00"),
        ("hourly", "2026-03-06 13:00"),
        ("*:0/15", "2026-03-06 12:15"),
        ("mon,wed,fri 22:00", "2026-03-06 22:00"),
        ("2026-12-24 18:00", "2026-12-24 18:00"),
        ("*/5", "2026-03-06 12:05"),
        ("12:00", "2026-03-07 12:00"),  # strictly after: not the same minute
        ("fri 12..13:5/20", "2026-03-06 12:05"),
        ("Sat *-1..7 15:00", "2026-03-07 15:00"),  # first Saturday of the month
        ("*-05", "2026-04-05 00:00"),
        ("monthly", "2026-04-01 00:00"),
        ("quarterly", "2026-04-01 00:00"),
        ("*-02-29", "2028-02-29 00:00"),
        ("0 3 * * 1-5", "2026-03-09 03:00"),  # cron: weekdays at 03:00
        ("*/20 * * * *", "2026-03-06 12:20"),
        ("0 0 1 * mon", "2026-03-09 00:00"),  # cron: day-of-month OR weekday
        ("30 4 * jan,jul sun", "2026-07-05 04:30"),
        ("@daily", "2026-03-07 00:00"),
    ],
)
def test_next_run_in_utc(event, expected):
    assert next_run(event, FRIDAY_NOON) == datetime.fromisoformat(expected).replace(tzinfo=UTC)


def test_a_date_in_the_past_never_runs():
    assert next_run("2020-01-01 00:00", FRIDAY_NOON) is None


def test_local_zone_with_dst():
    # Europe/Berlin springs forward on 29 March 2026 (02:00 -> 03:00) and falls back on 25 October.
    before_spring = datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN)
    assert next_run("02:30", before_spring) == datetime(2026, 3, 30, 2, 30, tzinfo=BERLIN)  # skipped on the 29th
    assert next_run("03:30", before_spring).utcoffset().total_seconds() == 7200  # CEST after the change
    assert next_run("03:30", before_spring) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    before_fall = datetime(2026, 10, 25, 0, 0, tzinfo=BERLIN)
    first = next_run("02:30", before_fall)  # 02:30 happens twice that night: once
    assert first.astimezone(UTC) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert next_run("02:30", first) == datetime(2026, 10, 26, 2, 30, tzinfo=BERLIN)
    # A naive time is taken in the zone asked for; the answer is in that zone.
    assert next_run("mon..fri 02:00", datetime(2026, 3, 6, 12, 0), BERLIN) == datetime(2026, 3, 9, 2, 0, tzinfo=BERLIN)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("funday 02:00", "'funday' is not a valid weekday"),
        ("25:00", "hour 25 is outside 0..23"),
        ("02:61", "minute 61 is outside 0..59"),
        ("fri..funday 02:00", "'funday' is not a valid weekday"),
        ("*:*/61", r"minute repetition 61 is outside 0..59"),
        ("12:30..11", "minute range '30..11' runs backwards"),
        (" mon 02:00", "starts with a weekday"),
        ("*/0:00", "repetition '/0'"),
        ("2026-13-01", "month 13 is outside 1..12"),
        ("02:00 extra", "unexpected 'extra'"),
        ("1:2:3:4", "HOURS:MINUTES"),
        ("mon 02:00 tue", "unexpected word 'tue'"),
    ],
)
def test_bad_calendar_events_name_the_problem(text, problem):
    with pytest.raises(ValidationError, match=problem.replace("*", r"\*").replace("(", r"\(")):
        parse_calendar_event(text)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("* * * *", "5 fields"),
        ("60 * * * *", "minute 60 is outside 0..59"),
        ("* * * * funday", "'funday' is not a valid day of week"),
        ("@often", "'@often' is not one of"),
        ("5-1 * * * *", "runs backwards"),
    ],
)
def test_bad_cron_lines_name_the_problem(text, problem):
    with pytest.raises(ValidationError, match=problem):
        parse_cron(text)
