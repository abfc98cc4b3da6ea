"""Sizes as the engine counts them: powers of 1024, named so (KiB, MiB, GiB), never "GB" for a GiB.

Django's ``filesizeformat`` divides by 1024 but prints "GB"; a Proxmox admin comparing it with a
``memory: 512`` (MiB) or a ``size=8G`` (GiB) would read the wrong unit.
"""

from __future__ import annotations

from django import template

register = template.Library()
UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def ibytes(value) -> str:
    """``1610612736`` -> ``1.5 GiB``; ``None`` or garbage -> ``–``."""
    try:
        size = float(value)
    except (TypeError, ValueError):
        return "–"
    unit = 0
    while abs(size) >= 1024 and unit < len(UNITS) - 1:
        size /= 1024
        unit += 1
    return f"{size:.0f} {UNITS[unit]}" if unit == 0 else f"{size:.1f} {UNITS[unit]}"


register.filter("ibytes", ibytes)
