"""Graph data from the RRD-like ``MetricSample`` table, shaped for the charts (columns, not rows)."""

from __future__ import annotations

import time

from webui.models import MetricSample

TIMEFRAMES = list(MetricSample.RESOLUTIONS)  # hour, day, week


def timeframe(request) -> str:
    value = request.GET.get("timeframe", "hour")
    return value if value in MetricSample.RESOLUTIONS else "hour"


def series(scope: str, frame: str, kinds: tuple[str, ...] = ("cpu", "memory", "disk")) -> dict:
    """Columns for one scope over the timeframe: ``ts`` plus one list per measure."""
    step, keep = MetricSample.RESOLUTIONS[frame]
    since = int(time.time()) - step * keep
    rows = (
        MetricSample.objects.filter(scope=scope, step=step, ts__gte=since)
        .order_by("ts")
        .values_list("ts", "cpu", "memory", "memory_total", "net_in", "net_out", "disk_used", "disk_total")
    )
    names = ["ts", "cpu", "memory", "memory_total", "net_in", "net_out", "disk_used", "disk_total"]
    columns: dict = {name: [] for name in names}
    for row in rows:
        for name, value in zip(names, row, strict=True):
            columns[name].append(value)
    return {
        "scope": scope,
        "id": "chart-" + scope.replace("/", "-"),
        "kinds": list(kinds),
        "timeframe": frame,
        "step": step,
        "window": step * keep,
        "live": frame == "hour",
        **columns,
    }


def latest(scope: str) -> MetricSample | None:
    step = MetricSample.RESOLUTIONS["hour"][0]
    return MetricSample.objects.filter(scope=scope, step=step).order_by("-ts").first()
