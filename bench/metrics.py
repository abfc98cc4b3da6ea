"""The metrics write cost of one node tick with 10, 100 and 1,000 running containers, on PostgreSQL.

No LXC and no containers are needed: the readings are made up, what is measured is the database side of
``tasks.node.sample`` (the metric buckets of the node and of each container, and each container's last
reading on its row). Two sides, alternating A B after a warm-up, on one database of its own (created on
the server of ``DATABASE_URL`` and dropped at the end):

- ``per-row``: the write path before batching, kept here as the baseline: for each container and each of
  the three resolutions a transaction with ``SELECT ... FOR UPDATE``, an INSERT or UPDATE and a DELETE of
  expired buckets, then an UPDATE of the container's row;
- ``batched``: ``tasks.node.write_sample``: one locking SELECT, one ``INSERT ... ON CONFLICT DO UPDATE`` of
  every bucket, one DELETE, one bulk UPDATE of the containers, whatever their number.

Each tick is 10 s after the previous one (a new 10 s bucket, the same 5 min and 30 min ones), as on a node.
Prints per-tick time (median, min-max), statements per tick and the ratio batched/per-row pair by pair.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

sys.path.insert(0, str(REPO / "bench"))
from common import fmt, pair_ratios  # noqa: E402

START = 1_800_000_000


@contextlib.contextmanager
def database():
    """A database of its own, migrated; dropped on the way out."""
    import psycopg

    base = urlparse(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/caisson"))
    name = f"caisson_bench_metrics_{os.getpid()}"
    admin = base._replace(path="/postgres").geturl()
    os.environ.update(DATABASE_URL=base._replace(path=f"/{name}").geturl(), DJANGO_SETTINGS_MODULE="webui.settings")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        yield
    finally:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def per_row(when: float, readings: dict[str, dict], containers: list) -> None:
    """The baseline: the write path as it was, one reading and one container at a time."""
    from django.db import transaction

    from tasks.node import _fold
    from webui.models import Container, MetricSample

    for scope, values in readings.items():
        for step, keep in MetricSample.RESOLUTIONS.values():
            bucket = int(when) - int(when) % step
            with transaction.atomic():
                row, created = MetricSample.objects.select_for_update().get_or_create(
                    scope=scope, step=step, ts=bucket, defaults={**values, "samples": 1}
                )
                if not created:
                    _fold(row, values)
                    row.save()
            MetricSample.objects.filter(scope=scope, step=step, ts__lt=bucket - step * keep).delete()
    for ct in containers:
        Container.objects.filter(pk=ct.pk).update(cpu=ct.cpu, memory_used=ct.memory_used, ipv4=ct.ipv4, ipv6=ct.ipv6)


def fleet(node, first: int, count: int) -> list:
    from webui.models import Container

    return list(
        Container.objects.bulk_create(
            Container(ctid=first + i, node=node, status="running", ipv4=[f"10.1.{i // 250}.{i % 250 + 1}"])
            for i in range(count)
        )
    )


def readings_for(node, containers: list, tick: int) -> dict[str, dict]:
    readings = {f"node/{node.name}": {"cpu": 0.5 + tick % 3, "memory": 8 << 30, "disk_used": 1 << 40}}
    for i, ct in enumerate(containers):
        ct.cpu, ct.memory_used = (i + tick) % 7 / 10, (64 << 20) + tick * 4096
        readings[f"ct/{ct.ctid}"] = {
            "cpu": ct.cpu,
            "memory": ct.memory_used,
            "memory_total": 512 << 20,
            "net_in": 1000.0 * tick,
            "net_out": 10.0 * i,
        }
    return readings


class Counter:
    """A database execute wrapper that notes each statement."""

    def __init__(self, into: list[str]):
        self.into = into

    def __call__(self, execute, sql, params, many, context):
        self.into.append(sql)
        return execute(sql, params, many, context)


def measure(count: int, runs: int, warmup: int) -> dict:
    from django.db import connection
    from django.utils import timezone

    from tasks.node import write_sample
    from webui.models import Node

    sides = {}
    for label, first, write in (("per-row", 100_000, per_row), ("batched", 200_000, write_sample)):
        node = Node.objects.create(name=f"{label}-{count}", last_seen=timezone.now())
        sides[label] = (node, fleet(node, first + count * 10, count), write, [], [])
    for tick in range(warmup + runs):  # A B A B: both sides meet the same load on this shared machine
        when = START + count * 100_000 + tick * 10
        for _label, (node, containers, write, times, statements) in sides.items():
            readings = readings_for(node, containers, tick)
            counted: list[str] = []
            with connection.execute_wrapper(Counter(counted)):
                began = time.perf_counter_ns()
                write(when, readings, containers)
                elapsed = (time.perf_counter_ns() - began) / 1e6
            if tick >= warmup:
                times.append(elapsed)
                statements.append(len(counted))
    (_, _, _, old, old_q), (_, _, _, new, new_q) = sides["per-row"], sides["batched"]
    return {
        "containers": count,
        "per_row_ms": old,
        "batched_ms": new,
        "per_row_statements": max(old_q),
        "batched_statements": max(new_q),
        "ratio": pair_ratios(new, old),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="10,100,1000", help="container counts (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=10, help="ticks per side and count (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=2, help="ticks per side not counted (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="write the raw samples here")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    with database():
        results = [measure(count, args.runs, args.warmup) for count in counts]
    print(f"Metrics write cost per node tick, PostgreSQL, {args.runs} ticks per side (median, min-max)\n")
    print(f"{'containers':>10}  {'per-row ms':>24}  {'batched ms':>24}  {'stmts':>11}  {'batched/per-row':>22}")
    for r in results:
        print(
            f"{r['containers']:>10}  {fmt(r['per_row_ms']):>24}  {fmt(r['batched_ms']):>24}  "
            f"{r['per_row_statements']:>5}/{r['batched_statements']:<5}  {fmt(r['ratio']):>22}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
