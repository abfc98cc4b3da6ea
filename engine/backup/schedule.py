"""When a backup job runs next: Proxmox calendar events and cron lines, as pure functions.

Calendar events (``systemd.time``-like, as Proxmox VE and Backup Server write
them): ``[WEEKDAYS] [[YEARS-]MONTHS-DAYS] [HOURS:MINUTES[:SECONDS]]``.
Weekdays are ``mon..sun`` (lists and ``..`` ranges); each number field takes
``*``, values, ``a..b`` ranges and ``start/step`` repetitions (``*/6`` is
``0/6``), comma-separated. A lone time field is the minutes of every hour
(``*/5``: every five minutes); a missing time means ``00:00``. The words
``minutely hourly daily weekly monthly yearly annually quarterly
semiannually`` stand for their usual events.

Cron lines: five fields, minute hour day-of-month month day-of-week, with
``*``, lists, ranges, ``*/n`` and ``a-b/n`` steps, names (``jan``, ``mon``),
``0`` or ``7`` for Sunday, Vixie cron's rule that a restricted day-of-month
and a restricted day-of-week match either, and ``@hourly`` and the like.

Times are wall-clock times in a time zone (``zoneinfo``): a time that a DST
change skips does not happen that day, a time that it repeats happens once
(its first occurrence).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from engine.errors import ValidationError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
SPECIAL = {
    "minutely": "*-*-* *:*:00", "hourly": "*-*-* *:00:00", "daily": "*-*-* 00:00:00",
    "weekly": "mon *-*-* 00:00:00", "monthly": "*-*-01 00:00:00", "yearly": "*-01-01 00:00:00",
    "annually": "*-01-01 00:00:00", "quarterly": "*-01,04,07,10-01 00:00:00",
    "semiannually": "*-01,07-01 00:00:00", "semi-annually": "*-01,07-01 00:00:00",
}
CRON_SPECIAL = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
                "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
SEARCH_DAYS = 366 * 8 + 2  # a 29 February may be eight years away (2096 -> 2104)


@dataclass(frozen=True)
class Schedule:
    """A parsed event: the allowed values of each field (None: any)."""

    text: str
    years: frozenset[int] | None
    months: frozenset[int]
    days: frozenset[int]
    weekdays: frozenset[int]  # 0 = Monday
    hours: tuple[int, ...]
    minutes: tuple[int, ...]
    seconds: tuple[int, ...]
    day_or_weekday: bool = False  # cron: a restricted day-of-month OR a restricted weekday

    def day_matches(self, day: date) -> bool:
        if self.years is not None and day.year not in self.years:
            return False
        if day.month not in self.months:
            return False
        in_month, in_week = day.day in self.days, day.weekday() in self.weekdays
        return (in_month or in_week) if self.day_or_weekday else (in_month and in_week)

    def next_after(self, after: datetime, tz: tzinfo | None = None) -> datetime | None:
        """The first time strictly after ``after`` that the event names, or None if there is none.

        ``after`` may be naive (taken in ``tz``, UTC by default) or aware; the result is aware, in ``tz``
        (default: ``after``'s own zone, else UTC).
        """
        zone = tz or after.tzinfo or UTC
        now = after.replace(tzinfo=zone) if after.tzinfo is None else after.astimezone(zone)
        wall = now.replace(tzinfo=None)
        day = wall.date()
        for _ in range(SEARCH_DAYS):
            if self.years is not None and day.year > max(self.years):
                return None
            if self.day_matches(day):
                for moment in self._times(day, wall.time() if day == wall.date() else None):
                    candidate = datetime.combine(day, moment).replace(tzinfo=zone, fold=0)
                    real = candidate.astimezone(UTC)
                    if real.astimezone(zone).replace(tzinfo=None) != candidate.replace(tzinfo=None):
                        continue  # skipped by a DST change
                    if real > now.astimezone(UTC):
                        return candidate
            day += timedelta(days=1)
        return None

    def _times(self, day: date, not_before: time | None):
        """The event's times on one day, in order; only those after ``not_before`` if given."""
        for h in self.hours:
            if not_before is not None and h < not_before.hour:
                continue
            for m in self.minutes:
                for s in self.seconds:
                    moment = time(h, m, s)
                    if not_before is None or moment > not_before:
                        yield moment


def _fail(text: str, problem: str) -> ValidationError:
    return ValidationError(f"schedule '{text}': {problem}", key="schedule")


def _number(token: str, lo: int, hi: int, what: str, text: str, names: tuple[str, ...] = (), base: int = 0) -> int:
    low = token.lower()
    if names and low in names:
        return names.index(low) + base
    if not token.isdigit():
        raise _fail(text, f"'{token}' is not a valid {what}")
    value = int(token)
    if not lo <= value <= hi:
        raise _fail(text, f"{what} {value} is outside {lo}..{hi}")
    return value


def _field(spec: str, lo: int, hi: int, what: str, text: str, *, range_sep: str = "..",
           names: tuple[str, ...] = (), base: int = 0) -> frozenset[int]:
    """One field: comma-separated ``*``, ``v``, ``a<sep>b``, each with an optional ``/step``."""
    if not spec:
        raise _fail(text, f"empty {what} field")
    values: set[int] = set()
    for part in spec.split(","):
        if not part:
            raise _fail(text, f"empty item in the {what} field '{spec}'")
        body, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise _fail(text, f"repetition '/{step_text}' in the {what} field must be a number above 0")
            step = int(step_text)
        if body == "*":
            start, end = lo, hi
        elif range_sep in body:
            first, _, last = body.partition(range_sep)
            start = _number(first, lo, hi, what, text, names, base)
            end = _number(last, lo, hi, what, text, names, base)
            if end < start:
                raise _fail(text, f"{what} range '{body}' runs backwards")
        else:
            start = _number(body, lo, hi, what, text, names, base)
            end = hi if slash else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


def parse_calendar_event(text: str) -> Schedule:
    """Parse a Proxmox calendar event; ValidationError names the part that is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise _fail(str(text), "empty event")
    source = text
    words = text.strip().lower().split()
    if len(words) == 1 and words[0] in SPECIAL:
        words = SPECIAL[words[0]].split()
    weekdays = frozenset(range(7))
    if words and re.match(r"^[a-z]", words[0]):
        weekdays = _field(words.pop(0), 0, 6, "weekday", source, names=WEEKDAYS)
        if any(w and re.match(r"^[a-z]", w) for w in words):
            raise _fail(source, f"unexpected word '{next(w for w in words if re.match(r'^[a-z]', w))}'")
    years, months, days = None, frozenset(range(1, 13)), frozenset(range(1, 32))
    if words and "-" in words[0] and ":" not in words[0]:
        parts = words.pop(0).split("-")
        if len(parts) == 3:
            if parts[0] != "*":
                years = _field(parts[0], 1970, 9999, "year", source)
            parts = parts[1:]
        if len(parts) != 2:
            raise _fail(source, "a date must be [YEARS-]MONTHS-DAYS")
        months = _field(parts[0], 1, 12, "month", source)
        days = _field(parts[1], 1, 31, "day", source)
    hours, minutes, seconds = frozenset({0}), frozenset({0}), frozenset({0})
    if words:
        spec = words.pop(0)
        fields = spec.split(":")
        if len(fields) == 1:
            hours, minutes = frozenset(range(24)), _field(fields[0], 0, 59, "minute", source)
        elif len(fields) in (2, 3):
            hours = _field(fields[0], 0, 23, "hour", source)
            minutes = _field(fields[1], 0, 59, "minute", source)
            if len(fields) == 3:
                seconds = _field(fields[2], 0, 59, "second", source)
        else:
            raise _fail(source, f"time '{spec}' must be HOURS:MINUTES[:SECONDS]")
    if words:
        raise _fail(source, f"unexpected '{' '.join(words)}' after the time")
    if years is not None and not years:
        raise _fail(source, "no year left")
    return Schedule(source, years, months, days, weekdays, tuple(sorted(hours)), tuple(sorted(minutes)),
                    tuple(sorted(seconds)))


def parse_cron(text: str) -> Schedule:
    """Parse a five-field cron line (or ``@daily`` and the like)."""
    if not isinstance(text, str) or not text.strip():
        raise _fail(str(text), "empty cron line")
    source = text
    line = CRON_SPECIAL.get(text.strip().lower(), text.strip())
    if line.startswith("@"):
        raise _fail(source, f"'{line}' is not one of {', '.join(CRON_SPECIAL)}")
    fields = line.split()
    if len(fields) != 5:
        raise _fail(source, f"a cron line has 5 fields (minute hour day-of-month month day-of-week), not {len(fields)}")
    minute, hour, dom, month, dow = fields
    dows = _field(dow, 0, 7, "day of week", source, range_sep="-", names=("sun",) + WEEKDAYS[:6])
    # cron counts Sunday as 0 (or 7); Schedule counts Monday as 0.
    weekdays = frozenset((d - 1) % 7 for d in dows)
    return Schedule(source, None, _field(month, 1, 12, "month", source, range_sep="-", names=MONTHS, base=1),
                    _field(dom, 1, 31, "day of month", source, range_sep="-"), weekdays,
                    tuple(sorted(_field(hour, 0, 23, "hour", source, range_sep="-"))),
                    tuple(sorted(_field(minute, 0, 59, "minute", source, range_sep="-"))), (0,),
                    day_or_weekday=not dom.startswith("*") and not dow.startswith("*"))


def parse_schedule(text: str) -> Schedule:
    """A cron line if it has five fields or starts with ``@``, else a calendar event."""
    stripped = text.strip() if isinstance(text, str) else ""
    if stripped.startswith("@") or len(stripped.split()) == 5:
        return parse_cron(text)
    return parse_calendar_event(text)


def next_run(event: str | Schedule, after: datetime, tz: tzinfo | None = None) -> datetime | None:
    """The next time ``event`` (a calendar event, a cron line, or a parsed Schedule) fires after ``after``."""
    schedule = event if isinstance(event, Schedule) else parse_schedule(event)
    return schedule.next_after(after, tz)
