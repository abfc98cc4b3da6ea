"""Backups and restores of containers, in Proxmox's vzdump format.

| module | what it holds |
|---|---|
| ``dump`` | ``backup()``: modes stop/suspend/snapshot, the atomic archive, log, notes, prune after success |
| ``archive`` | the archive layout (``./etc/vzdump/pct.conf`` then the rootfs), writing and reading it |
| ``restore`` | ``restore()``: to a new ID, or over a stopped container with ``force`` |
| ``verify`` | ``verify()``: read an archive end to end without restoring |
| ``names`` | archive names, listing a dump directory, notes and protection markers |
| ``prune`` | retention with Proxmox Backup Server's keep-* rules, a pure function |
| ``schedule`` | calendar events and cron lines: parsing and the next run time |
| ``guard`` | the watchdog that thaws or restarts a container if the backup process dies |
| ``progress`` | progress callbacks and cancellation |
| ``cli`` | ``python -m engine.backup`` |

Heavy imports (zstandard, the engine) load only when a backup or restore runs.
"""

from __future__ import annotations

from .names import COMPRESSIONS, MODES, BackupFile, list_backups
from .progress import Cancelled
from .prune import Backup, Decision, PruneOptions, prune
from .schedule import Schedule, next_run, parse_calendar_event, parse_cron, parse_schedule


def backup(engine, ctid, **kwargs):
    from .dump import backup as run

    return run(engine, ctid, **kwargs)


def restore(engine, archive, ctid, **kwargs):
    from .restore import restore as run

    return run(engine, archive, ctid, **kwargs)


def verify(archive, **kwargs):
    from .verify import verify as run

    return run(archive, **kwargs)


__all__ = [
    "COMPRESSIONS",
    "MODES",
    "Backup",
    "BackupFile",
    "Cancelled",
    "Decision",
    "PruneOptions",
    "Schedule",
    "backup",
    "list_backups",
    "next_run",
    "parse_calendar_event",
    "parse_cron",
    "parse_schedule",
    "prune",
    "restore",
    "verify",
]
