"""Graph data from the RRD-like ``MetricSample`` table, shaped for the charts (columns, not rows)."""

from __future__ import annotations

import time

from webui.models import MetricSample

TIMEFRAMES = list(MetricSample.RESOLUTIONS)  # hour, day, week, month, year


COLUMNS = ("ts", "cpu", "memory", "memory_total", "net_in", "net_out", "disk_used", "disk_total", "io_read", "io_write")


def timeframe(request) -> str:
    value = request.GET.get("timeframe", "hour")
    return value if value in MetricSample.RESOLUTIONS else "hour"


def series(scope: str, frame: str, kinds: tuple[str, ...] = ("cpu", "memory", "disk")) -> dict:
    """Columns for one scope over the timeframe: ``ts`` plus one list per measure."""
    step, keep = MetricSample.RESOLUTIONS[frame]
    since = int(time.time()) - step * keep
    rows = MetricSample.objects.filter(scope=scope, step=step, ts__gte=since).order_by("ts").values_list(*COLUMNS)
    names = list(COLUMNS)
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


HINT_HISTORY = 3600  # seconds of history a hint needs at least
HIGH, LOW = 0.9, 0.25  # a peak above HIGH of the limit is close to it; below LOW, the limit is far above


def _mib(value: float) -> str:
    return f"{value / (1 << 20):.0f} MiB" if value < 1 << 30 else f"{value / (1 << 30):.1f} GiB"


def _round_mib(value: float) -> int:
    """A memory size to suggest: the next power of two MiB, at least 64."""
    mib = max(64, int(value / (1 << 20)) + 1)
    return 1 << (mib - 1).bit_length()


def sizing_hints(container) -> list[dict]:
    """Right-sizing hints from the container's last week: a limit far above what it used, or close to it.

    The week's 30-minute averages and the last hour's 10-second ones both count, so a short burst shows;
    without an hour of history nothing is said (a fresh container's idle start proves nothing).
    """
    scope = f"ct/{container.ctid}"
    now = int(time.time())
    rows = list(
        MetricSample.objects.filter(scope=scope, ts__gte=now - 7 * 86400, step__in=(10, 1800)).values_list(
            "ts", "cpu", "memory", "memory_total", "disk_used", "disk_total"
        )
    )
    if not rows or max(r[0] for r in rows) - min(r[0] for r in rows) < HINT_HISTORY:
        return []
    hints = []
    cpu_peak, mem_peak = max(r[1] for r in rows), max(r[2] for r in rows)
    limit = int(container.config.get("memory") or 512) << 20
    if mem_peak >= HIGH * limit:
        hints.append(
            {
                "kind": "memory",
                "level": "high",
                "text": f"Memory: the peak {_mib(mem_peak)} is close to the limit {_mib(limit)}; raise it "
                f"(to {_round_mib(mem_peak * 1.5)} MiB, say) before the kernel reclaims and kills.",
            }
        )
    elif mem_peak < LOW * limit and limit > 128 << 20:
        hints.append(
            {
                "kind": "memory",
                "level": "low",
                "text": f"Memory: the limit {_mib(limit)} is far above the week's peak {_mib(mem_peak)}; "
                f"{_round_mib(mem_peak * 2)} MiB would do.",
            }
        )
    cores = container.config.get("cores")
    cores = int(cores) if str(cores or "").isdigit() else (container.node.cpus or 0)
    if cores:
        if cpu_peak >= HIGH * cores:
            hints.append(
                {
                    "kind": "cpu",
                    "level": "high",
                    "text": f"CPU: the peak {cpu_peak:.2f} CPUs is close to its {cores} cores; give it more.",
                }
            )
        elif cpu_peak < LOW * cores and cores > 1:
            hints.append(
                {
                    "kind": "cpu",
                    "level": "low",
                    "text": f"CPU: {cores} cores, but the week's peak is {cpu_peak:.2f} CPUs; "
                    f"{max(1, int(cpu_peak * 2) + 1)} would do.",
                }
            )
    latest = max(rows, key=lambda r: r[0])
    if latest[5] and latest[4] >= HIGH * latest[5]:
        hints.append(
            {
                "kind": "disk",
                "level": "high",
                "text": f"Disk: {_mib(latest[4])} of {_mib(latest[5])} used; grow the root disk in Resources.",
            }
        )
    return hints
