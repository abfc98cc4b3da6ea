"""Scheduled snapshots' names, expiry and retention, with Incus's and Proxmox's semantics.

A protection policy takes snapshots on a schedule (the web tier's calendar
event) and names them from a pattern, as Incus's ``snapshots.pattern``: a
``%d`` in it becomes the next free number (0 first, then one more than the
highest number a snapshot of that pattern already has), and
``{{ creation_date|date:"2006-01-02_15-04-05" }}`` the snapshot's time in Go's
layout notation (Incus's pongo2 filter).  A pattern without ``%d`` whose
name is taken gets ``-0``, ``-1``... appended, as Incus does.  The name must
still be a Proxmox snapshot name (``engine.storage.check_snapshot_name``).

Expiry is Incus's ``snapshots.expiry``: space-separated amounts with units
``M`` (minutes), ``H`` (hours), ``d`` (days), ``w`` (weeks), ``m`` (months)
and ``y`` (years), ``1w 2d``; empty means never.  The time is fixed when the
snapshot is taken and written into its description (a marker line naming
the policy), so changing a policy's expiry later does not move the expiry of
snapshots already taken, as in Incus; the marker is also how the policy
recognises its own snapshots: it never removes one it did not take.

Retention (keep-last, keep-daily... ) is Proxmox's, the backups' prune
(``engine.backup.prune``) run over the policy's own snapshots of one
container.  Pure functions: the caller lists snapshots and deletes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from engine.backup.prune import Backup, PruneOptions, prune
from engine.errors import ValidationError
from engine.storage import check_snapshot_name

DEFAULT_PATTERN = "snap%d"
EXPIRY_UNITS = {"M": "minutes", "H": "hours", "d": "days", "w": "weeks", "m": "months", "y": "years"}
EXPIRY_RE = re.compile(r"^(\d{1,6})([MHdwmy])$")
DATE_RE = re.compile(r"""\{\{\s*creation_date\s*\|\s*date\s*:\s*(?:"([^"]*)"|'([^']*)')\s*\}\}""")
# Go's reference-time layout tokens, longest first so that "2006" is not read as "20" + "06".
GO_LAYOUT = (
    ("2006", "%Y"),
    ("January", "%B"),
    ("Monday", "%A"),
    ("Jan", "%b"),
    ("Mon", "%a"),
    ("MST", "%Z"),
    ("06", "%y"),
    ("01", "%m"),
    ("02", "%d"),
    ("15", "%H"),
    ("03", "%I"),
    ("04", "%M"),
    ("05", "%S"),
    ("PM", "%p"),
)
MARKER_RE = re.compile(r"^caisson-policy=(\d+) expires=(\S+)$", re.MULTILINE)


def parse_expiry(text: str) -> list[tuple[int, str]]:
    """``"1w 2d"`` -> ``[(1, "w"), (2, "d")]``; empty text: no expiry.  Bad input names the part."""
    parts = []
    for token in (text or "").split():
        match = EXPIRY_RE.match(token)
        if not match:
            raise ValidationError(
                f"expiry '{text}': '{token}' is not an amount with a unit "
                "(M minutes, H hours, d days, w weeks, m months, y years), e.g. '2d 12H'",
                key="snapshot_expiry",
            )
        parts.append((int(match.group(1)), match.group(2)))
    return parts


def _add_months(when: datetime, months: int) -> datetime:
    month0 = when.month - 1 + months
    year, month = when.year + month0 // 12, month0 % 12 + 1
    for day in (when.day, 30, 29, 28):  # the 31st of a shorter month is its last day
        try:
            return when.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    raise AssertionError("unreachable")


def expires_at(created: datetime, text: str) -> datetime | None:
    """When a snapshot taken at ``created`` expires under ``text``; None: never."""
    parts = parse_expiry(text)
    if not parts:
        return None
    when = created
    for amount, unit in parts:
        name = EXPIRY_UNITS[unit]
        if name == "months":
            when = _add_months(when, amount)
        elif name == "years":
            when = _add_months(when, 12 * amount)
        else:
            when += timedelta(**{name: amount})
    return when


def _go_date(layout: str, when: datetime) -> str:
    out, i = [], 0
    while i < len(layout):
        for token, code in GO_LAYOUT:
            if layout.startswith(token, i):
                out.append(when.strftime(code))
                i += len(token)
                break
        else:
            out.append(layout[i])
            i += 1
    return "".join(out)


def check_pattern(pattern: str) -> str:
    """A pattern that can make a valid snapshot name (checked on a sample time), or a ValidationError."""
    if not pattern or pattern.count("%d") > 1:
        raise ValidationError(f"pattern '{pattern}': give a name, with at most one '%d'", key="snapshot_pattern")
    sample = DATE_RE.sub(lambda m: _go_date(m.group(1) or m.group(2) or "", datetime(2006, 1, 2, 15, 4, 5)), pattern)
    try:
        check_snapshot_name(sample.replace("%d", "0"))
    except ValidationError as exc:
        raise ValidationError(f"pattern '{pattern}' gives '{sample}': {exc}", key="snapshot_pattern") from None
    return pattern


def snapshot_name(pattern: str, created: datetime, existing: set[str]) -> str:
    """The name of a new snapshot from ``pattern`` at ``created``, given the container's snapshot names."""
    base = DATE_RE.sub(lambda m: _go_date(m.group(1) or m.group(2) or "", created), pattern or DEFAULT_PATTERN)
    if "%d" not in base:
        if base not in existing:
            return check_snapshot_name(base)
        base += "-%d"
    head, _, tail = base.partition("%d")
    numbered = re.compile(re.escape(head) + r"(\d+)" + re.escape(tail) + "$")
    used = [int(m.group(1)) for m in map(numbered.match, existing) if m]
    return check_snapshot_name(f"{head}{max(used, default=-1) + 1}{tail}")


def marker(policy: int, expires: datetime | None) -> str:
    """The description line that says a snapshot is the policy's and when it expires."""
    stamp = expires.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if expires else "never"
    return f"caisson-policy={policy} expires={stamp}"


@dataclass(frozen=True)
class Owned:
    """One snapshot the policy took."""

    name: str
    snaptime: int
    expires: datetime | None


def owned(policy: int | None, snapshots) -> list[Owned]:
    """The snapshots (``name``, ``snaptime``, ``description`` attributes) that carry this policy's marker
    (``None``: any policy's, safety snapshots included)."""
    found = []
    for snap in snapshots:
        match = MARKER_RE.search(snap.description or "")
        if not match or (policy is not None and int(match.group(1)) != policy) or snap.snaptime is None:
            continue
        raw = match.group(2)
        expires = None if raw == "never" else datetime.strptime(raw, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        found.append(Owned(snap.name, int(snap.snaptime), expires))
    return found


def to_remove(
    ctid: int, mine: list[Owned], now: datetime, keep: PruneOptions, tz: tzinfo | None = None
) -> list[tuple[str, str]]:
    """``(name, reason)`` of the policy's snapshots of one container to delete: expired, then by retention."""
    expired = [(s.name, f"expired at {s.expires.isoformat()}") for s in mine if s.expires and s.expires <= now]
    gone = {name for name, _ in expired}
    rest = [Backup(time=s.snaptime, ctid=ctid, name=s.name) for s in mine if s.name not in gone]
    pruned = [(d.backup.name, f"retention: {d.removed_by}") for d in prune(rest, keep, tz) if not d.keep]
    return expired + pruned
