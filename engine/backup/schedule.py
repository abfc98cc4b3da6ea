"""When a backup job runs next: Proxmox calendar events and cron lines, as pure functions.

Calendar events, with Proxmox's grammar and semantics (proxmox-time, used by
Proxmox VE and Backup Server): ``[WEEKDAYS] [[YEARS-]MONTHS-DAYS] [[HOURS:]MINUTES[:SECONDS]] [UTC]``.
Weekdays are ``mon`` or ``monday`` in any case, in lists and ``..`` ranges
that may wrap (``fri..mon``).  Each number field takes ``*``, values,
``a..b`` ranges and ``start/step`` repetitions (``*/6`` is ``0/6``; a step
must be below the field's limit, so ``*/61`` is refused), comma-separated;
years run 0..2199.  A lone time field is the minutes of every hour (``*/5``:
every five minutes); a missing time means ``00:00``; a trailing ``UTC`` makes
the event count in UTC.  The words ``minutely hourly daily weekly monthly
yearly annually quarterly semiannually`` stand for their usual events.  A
date that never exists (``02-30``) never fires; one any number of years ahead
does.

Cron lines: five fields, minute hour day-of-month month day-of-week, with
``*``, lists, ranges, ``*/n`` and ``a-b/n`` steps, names (``jan``, ``mon``),
``0`` or ``7`` for Sunday, Vixie cron's rule that a restricted day-of-month
and a restricted day-of-week match either, and ``@hourly`` and the like.

Times are wall-clock times in a time zone (``zoneinfo``): a time that a DST
change skips does not happen that day, a time that it repeats happens once
(its first occurrence).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, tzinfo

from engine.errors import ValidationError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEKDAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
SPECIAL = {
    "minutely": "*-*-* *:*:00",
    "hourly": "*-*-* *:00:00",
    "daily": "*-*-* 00:00:00",
    "weekly": "mon *-*-* 00:00:00",
    "monthly": "*-*-01 00:00:00",
    "yearly": "*-01-01 00:00:00",
    "annually": "*-01-01 00:00:00",
    "quarterly": "*-01,04,07,10-01 00:00:00",
    "semiannually": "*-01,07-01 00:00:00",
    "semi-annually": "*-01,07-01 00:00:00",
}
CRON_SPECIAL = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
GREGORIAN_CYCLE = 400  # years after which dates and weekdays repeat: an event not found by then never fires
MAX_YEAR = 9999  # the last year Python's dates hold


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
    utc: bool = False  # the event said UTC: it counts in UTC whatever the zone asked for

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
        (default: ``after``'s own zone, else UTC), or in UTC for an event that says UTC.
        """
        zone = UTC if self.utc else (tz or after.tzinfo or UTC)
        now = after.replace(tzinfo=zone) if after.tzinfo is None else after.astimezone(zone)
        wall = now.replace(tzinfo=None)
        start = wall.date()
        if self.years is not None:
            years = sorted(y for y in self.years if start.year <= y <= MAX_YEAR)
        else:
            years = range(start.year, min(start.year + GREGORIAN_CYCLE, MAX_YEAR) + 1)
        for year in years:
            for month in sorted(m for m in self.months if 1 <= m <= 12):
                if (year, month) < (start.year, start.month):
                    continue
                last = calendar.monthrange(year, month)[1]
                days = range(1, last + 1) if self.day_or_weekday else sorted(d for d in self.days if 1 <= d <= last)
                for number in days:
                    day = date(year, month, number)
                    if day < start or not self.day_matches(day):
                        continue
                    found = self._first_time(day, wall.time() if day == start else None, zone, now)
                    if found is not None:
                        return found
        return None

    def _first_time(self, day: date, not_before: time | None, zone: tzinfo, now: datetime) -> datetime | None:
        for moment in self._times(day, not_before):
            candidate = datetime.combine(day, moment).replace(tzinfo=zone, fold=0)
            real = candidate.astimezone(UTC)
            if real.astimezone(zone).replace(tzinfo=None) != candidate.replace(tzinfo=None):
                continue  # skipped by a DST change
            if real > now.astimezone(UTC):
                return candidate
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


def _field(
    spec: str,
    lo: int,
    hi: int,
    what: str,
    text: str,
    *,
    range_sep: str = "..",
    names: tuple[str, ...] = (),
    base: int = 0,
) -> frozenset[int]:
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


class _EventParser:
    """Proxmox's calendar-event grammar, read left to right; every refusal names the part that is wrong."""

    # field -> (first value of ``*/step``, limit: values and steps must be below it)
    FIELDS = {
        "year": (0, 2200),
        "month": (1, 13),
        "day": (1, 32),
        "hour": (0, 24),
        "minute": (0, 60),
        "second": (0, 60),
    }
    DOMAIN = {
        "year": (0, MAX_YEAR),
        "month": (1, 12),
        "day": (1, 31),
        "hour": (0, 23),
        "minute": (0, 59),
        "second": (0, 59),
    }

    def __init__(self, source: str):
        self.source = source

    def fail(self, problem: str) -> ValidationError:
        return _fail(self.source, problem)

    def weekdays(self, text: str) -> tuple[frozenset[int], str]:
        """A leading comma list of weekdays and ranges (wrapping past Sunday); returns the days and the rest."""
        days: set[int] = set()
        while True:
            first, text = self._weekday(text)
            if text.startswith(".."):
                last, text = self._weekday(text[2:])
                days.update((first + i) % 7 for i in range((last - first) % 7 + 1))
            else:
                days.add(first)
            if not text.startswith(","):
                return frozenset(days), text
            text = text[1:]

    def _weekday(self, text: str) -> tuple[int, str]:
        word = re.match(r"[A-Za-z]*", text).group(0)
        low = word.lower()
        if low in WEEKDAYS or low in WEEKDAY_NAMES:
            return (WEEKDAYS.index(low[:3])), text[len(word) :]
        raise self.fail(f"'{word or text}' is not a valid weekday")

    def field(self, spec: str, what: str) -> frozenset[int] | None:
        """One number field; None for ``*`` (any value)."""
        start, limit = self.FIELDS[what]
        if spec == "*":
            return None
        if spec.startswith("*/"):
            return self._values(start, None, self._step(spec[2:], what, limit), what)
        if not spec:
            raise self.fail(f"empty {what} field")
        values: set[int] = set()
        for item in spec.split(","):
            body, slash, step_text = item.partition("/")
            first, dots, last = body.partition("..")
            low = self._number(first, what, limit)
            high = self._number(last, what, limit) if dots else None
            if high is not None and high < low:
                raise self.fail(f"{what} range '{body}' runs backwards")
            if slash:
                values |= self._values(low, high, self._number(step_text, what, limit, "repetition"), what)
            else:
                values.update(range(low, (low if high is None else high) + 1))
        return frozenset(values)

    def _step(self, text: str, what: str, limit: int) -> int:
        if not text.isdigit() or int(text) == 0:
            raise self.fail(f"repetition '/{text}' in the {what} field must be a number above 0")
        return self._number(text, what, limit, "repetition")

    def _number(self, text: str, what: str, limit: int, role: str = "") -> int:
        if not text.isascii() or not text.isdigit():
            raise self.fail(f"'{text}' is not a valid {what}{' ' + role if role else ''}")
        value = int(text)
        if value >= limit:
            lo = self.FIELDS[what][0] if not role else 0
            raise self.fail(f"{what} {role + ' ' if role else ''}{value} is outside {lo}..{limit - 1}")
        return value

    def _values(self, start: int, end: int | None, step: int, what: str) -> frozenset[int]:
        top = self.DOMAIN[what][1] if end is None else end
        return frozenset(range(start, top + 1, step)) if step else frozenset({start})


KEYWORDS = {
    word: SPECIAL[word]
    for word in (
        "minutely",
        "hourly",
        "daily",
        "weekly",
        "monthly",
        "yearly",
        "annually",
        "quarterly",
        "semiannually",
        "semi-annually",
    )
}


def parse_calendar_event(text: str) -> Schedule:
    """Parse a Proxmox calendar event; ValidationError names the part that is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise _fail(str(text), "empty event")
    source, parser = text, _EventParser(text)
    utc = text.endswith("UTC")
    if utc:
        text = text[:-3].rstrip(" ")
    if text in KEYWORDS:
        text = KEYWORDS[text]
    weekdays: frozenset[int] | None = None
    if text[:1].isascii() and text[:1].isalpha():
        weekdays, text = parser.weekdays(text)
        text = text.lstrip(" ")
    elif text[:1] == " " or not text:
        raise _fail(source, "an event starts with a weekday, a date or a time")
    years = months = days = None
    token = text.split(" ", 1)[0]
    if "-" in token and ":" not in token:
        parts = token.split("-")
        if len(parts) == 3:
            years = parser.field(parts.pop(0), "year")
        if len(parts) != 2:
            raise _fail(source, f"date '{token}' must be [YEARS-]MONTHS-DAYS")
        months, days = parser.field(parts[0], "month"), parser.field(parts[1], "day")
        text = text[len(token) :].lstrip(" ")
    hours, minutes, seconds = frozenset({0}), frozenset({0}), frozenset({0})
    if text:
        token, _, rest = text.partition(" ")
        if rest or text.endswith(" "):
            word = rest.strip().split(" ")[0]
            if word.lower() in WEEKDAYS or word.lower() in WEEKDAY_NAMES:
                raise _fail(source, f"unexpected word '{word}'")
            raise _fail(source, f"unexpected '{rest or ' '}' after the time")
        fields = token.split(":")
        if len(fields) > 3:
            raise _fail(source, f"time '{token}' must be HOURS:MINUTES[:SECONDS] or MINUTES")
        if len(fields) == 1:
            hours, minutes = None, parser.field(fields[0], "minute")
        else:
            hours, minutes = parser.field(fields[0], "hour"), parser.field(fields[1], "minute")
            if len(fields) == 3:
                seconds = parser.field(fields[2], "second")

    def full(values, what):
        lo, hi = _EventParser.DOMAIN[what]
        return frozenset(range(lo, hi + 1)) if values is None else values

    return Schedule(
        source,
        years,
        full(months, "month"),
        full(days, "day"),
        weekdays if weekdays is not None else frozenset(range(7)),
        tuple(sorted(full(hours, "hour"))),
        tuple(sorted(full(minutes, "minute"))),
        tuple(sorted(full(seconds, "second"))),
        utc=utc,
    )


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
    return Schedule(
        source,
        None,
        _field(month, 1, 12, "month", source, range_sep="-", names=MONTHS, base=1),
        _field(dom, 1, 31, "day of month", source, range_sep="-"),
        weekdays,
        tuple(sorted(_field(hour, 0, 23, "hour", source, range_sep="-"))),
        tuple(sorted(_field(minute, 0, 59, "minute", source, range_sep="-"))),
        (0,),
        day_or_weekday=not dom.startswith("*") and not dow.startswith("*"),
    )


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
