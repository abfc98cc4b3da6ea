"""Retention: which backups a prune keeps, with Proxmox Backup Server's semantics.

The rules run in a fixed order: keep-last, keep-hourly, keep-daily,
keep-weekly (ISO weeks, Monday to Sunday), keep-monthly, keep-yearly. Each
walks one container's backups newest first and keeps the newest backup of
each period until it has kept N periods; a period that an earlier rule
already covers is skipped (the newer rule does not keep a second backup in
it), and a backup a rule passes over inside a period it just kept is marked
for removal. Periods without backups do not count. Protected backups are
never removed and do not count for any rule. ``keep-all=1``, or no rule
above 0, keeps everything; as in Proxmox, ``keep-all=1`` cannot be combined
with a rule above 0 (``keep-all=0`` is the same as leaving it out).
Periods are taken in local time (``tz``), as the server does.

Pure functions: the caller lists the backups and deletes what is marked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from engine.errors import ValidationError

RULES = ("keep-last", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly", "keep-yearly")
BOOLEANS = {"1": True, "on": True, "yes": True, "true": True, "0": False, "off": False, "no": False, "false": False}


@dataclass(frozen=True)
class PruneOptions:
    """How many periods each rule keeps; None means the rule is not used."""

    keep_last: int | None = None
    keep_hourly: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_yearly: int | None = None
    keep_all: bool | None = None

    def __post_init__(self) -> None:
        for rule in RULES:
            value = getattr(self, rule.replace("-", "_"))
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValidationError(f"{rule}: {value!r} must be a whole number of 0 or more", key=rule)
        if self.keep_all not in (None, True, False):
            raise ValidationError(f"keep-all: {self.keep_all!r} must be 0 or 1", key="keep-all")
        if self.keep_all and any(getattr(self, r.replace("-", "_")) for r in RULES):
            raise ValidationError("keep-all cannot be set together with other options", key="keep-all")

    @classmethod
    def parse(cls, text: str) -> PruneOptions:
        """Proxmox's ``prune-backups`` property string: ``keep-last=3,keep-daily=7``."""
        values: dict[str, int] = {}
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            key, sep, raw = part.partition("=")
            if key == "keep-all" and sep:
                if raw.lower() not in BOOLEANS:
                    raise ValidationError(f"prune-backups: keep-all needs 0 or 1, not '{raw}'", key=key)
                values["keep_all"] = BOOLEANS[raw.lower()]
                continue
            if not sep or key not in RULES:
                known = ", ".join(["keep-all=0|1", *(r + "=N" for r in RULES)])
                raise ValidationError(f"prune-backups: '{part}' is not one of {known}", key="prune-backups")
            if not raw.isdigit():
                raise ValidationError(f"prune-backups: {key} needs a whole number, not '{raw}'", key=key)
            values[key.replace("-", "_")] = int(raw)
        return cls(**values)

    def active(self) -> bool:
        """Whether some rule may remove a backup (not keep-all, and a rule above 0)."""
        return not self.keep_all and any(getattr(self, r.replace("-", "_")) for r in RULES)

    def render(self) -> str:
        parts = [] if self.keep_all is None else [f"keep-all={int(self.keep_all)}"]
        return ",".join(
            parts
            + [
                f"{r}={getattr(self, r.replace('-', '_'))}"
                for r in RULES
                if getattr(self, r.replace("-", "_")) is not None
            ]
        )


@dataclass(frozen=True)
class Backup:
    """What prune needs of a backup: when it was made, whose it is, whether it is protected."""

    time: float  # seconds since the epoch
    ctid: int
    protected: bool = False
    name: str = ""  # for the caller: the archive's file name


@dataclass
class Decision:
    backup: Backup
    keep: bool
    reason: str  # the rule that kept it, "protected", "keep-all", or "" when removed
    removed_by: str = field(default="")  # for a removal: "no rule keeps it" or the rule that passed over it


def _period(rule: str, when: datetime) -> str:
    if rule == "keep-hourly":
        return when.strftime("%Y/%m/%d/%H")
    if rule == "keep-daily":
        return when.strftime("%Y/%m/%d")
    if rule == "keep-weekly":
        year, week, _ = when.isocalendar()
        return f"{year}/{week:02d}"
    if rule == "keep-monthly":
        return when.strftime("%Y/%m")
    return when.strftime("%Y")


def _select(
    marks: dict[int, Decision], group: list[Backup], keep: int, rule: str, period: Callable[[Backup], str]
) -> None:
    already = {
        period(b) for i, b in enumerate(group) if i in marks and marks[i].keep and marks[i].reason != "protected"
    }
    kept: set[str] = set()
    for i, backup in enumerate(group):
        if i in marks:
            continue
        if backup.protected:
            marks[i] = Decision(backup, True, "protected")
            continue
        key = period(backup)
        if key in already:
            continue
        if key not in kept:
            if len(kept) >= keep:
                break
            kept.add(key)
            marks[i] = Decision(backup, True, rule)
        else:
            marks[i] = Decision(backup, False, "", removed_by=f"{rule}: a newer backup of the same period is kept")


def prune(backups: Iterable[Backup], options: PruneOptions, tz: tzinfo | None = None) -> list[Decision]:
    """Keep or remove each backup, per container; newest first within each container, containers by ID."""
    groups: dict[int, list[Backup]] = {}
    for backup in backups:
        groups.setdefault(backup.ctid, []).append(backup)
    result: list[Decision] = []
    for ctid in sorted(groups):
        group = sorted(groups[ctid], key=lambda b: (b.time, b.name), reverse=True)
        if not options.active():
            result += [Decision(b, True, "protected" if b.protected else "keep-all") for b in group]
            continue
        marks: dict[int, Decision] = {}
        if options.keep_last:
            _select(marks, group, options.keep_last, "keep-last", lambda b: f"{b.time!r}/{b.name}")
        for rule in RULES[1:]:
            count = getattr(options, rule.replace("-", "_"))
            if count:
                _select(
                    marks, group, count, rule, lambda b, rule=rule: _period(rule, datetime.fromtimestamp(b.time, tz))
                )
        for i, backup in enumerate(group):
            if backup.protected:
                result.append(Decision(backup, True, "protected"))
            elif i in marks:
                result.append(marks[i])
            else:
                result.append(Decision(backup, False, "", removed_by="no rule keeps it"))
    return result
