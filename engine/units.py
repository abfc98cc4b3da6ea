"""Numbers for people: byte sizes and durations, shared by the library, the jobs and the command lines.

Kept apart from ``engine.cli`` so that library code (a backup's log, a job's
progress line) can speak in the same units as the CLI without importing it.
"""

from __future__ import annotations


def human_bytes(value: int | None) -> str:
    """``1536`` -> ``1.5 KiB``; ``None`` (not known) -> ``-``."""
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


def human_duration(seconds: float | None) -> str:
    """The two largest units that matter: ``3d 4h``, ``2h 5m``, ``4m 10s``, ``9s``."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"
