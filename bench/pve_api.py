"""The same 1,000 containers through Proxmox's ``/api2/json/cluster/resources?type=vm`` and Caisson's own
``/api/containers/?limit=1000``, side by side.

Set-up as ``bench/web.py`` (its ``Bench``: a PostgreSQL database of its own, 1,000 container mirrors, an
Administrator and an Operator on a pool of 500, uvicorn on a free loopback port; no agent: nothing is
queued), then per user, alternating A B A B over one kept-alive connection each: ``GET /api/containers/``
with ``Authorization: Token`` and ``GET /api2/json/cluster/resources?type=vm`` with
``Authorization: PVEAPIToken`` (the call Ansible's proxmox module makes to find a container).  The time is
the client's round trip on loopback.  Reported: p50, p95, min, max of each, the ratio of the p95s and the
median of the pairwise ratios.  Goals: each p95 under 50 ms, the p95s within 1.2x of each other.

    .venv/bin/python bench/pve_api.py [--runs 200] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import pair_ratios  # noqa: E402
from webstack import CONTAINERS, POOLED, WebStack, percentile  # noqa: E402

GOAL_MS, GOAL_RATIO = 50.0, 1.2


def timed(conn: http.client.HTTPConnection, path: str, header: str, expected: int, rows) -> float:
    start = time.perf_counter_ns()
    conn.request("GET", path, headers={"Authorization": header, "Accept": "application/json"})
    response = conn.getresponse()
    body = response.read()
    elapsed = (time.perf_counter_ns() - start) / 1e6
    if response.status != 200 or len(rows(json.loads(body))) != expected:
        raise RuntimeError(f"{path} answered {response.status}: {body[:300]!r}")
    return elapsed


def compare(port: int, value: str, expected: int, runs: int, warmup: int) -> tuple[list[float], list[float]]:
    user, _, secret = value.partition("=")
    name, _, token = user.partition("!")
    own = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    pve = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    a, b = [], []
    for i in range(warmup + runs):
        first = timed(own, "/api/containers/?limit=1000", f"Token {value}", expected, lambda d: d["results"])
        second = timed(
            pve,
            "/api2/json/cluster/resources?type=vm",
            f"PVEAPIToken={name}@pve!{token}={secret}",
            expected,
            lambda d: d["data"],
        )
        if i >= warmup:
            a.append(first)
            b.append(second)
    own.close()
    pve.close()
    return a, b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="request pairs per user (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the raw samples here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    results = []
    with contextlib.ExitStack() as stack:
        bench = WebStack(args, stack)
        bench.database()
        tokens = bench.rows()
        port = bench.web()
        expected = {"Administrator": CONTAINERS, "Operator on a pool of 500": POOLED}
        for who, value in tokens.items():
            own, pve = compare(port, value, expected[who], args.runs, args.warmup)
            results.append((who, own, pve))
    print(f"{CONTAINERS} containers on PostgreSQL, uvicorn on loopback, token auth, {args.runs} pairs A B A B\n")
    head = ["as", "endpoint", "p50", "p95", "min", "max", "p95 < 50 ms"]
    body = []
    for who, own, pve in results:
        for name, s in (("/api/containers/?limit=1000", own), ("/api2/json/cluster/resources?type=vm", pve)):
            p95 = percentile(s, 95)
            row = [who, name, f"{statistics.median(s):.1f}", f"{p95:.1f}", f"{min(s):.1f}", f"{max(s):.1f}"]
            body.append([*row, "met" if p95 < GOAL_MS else "MISSED"])
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    for line in [head, ["-" * w for w in widths], *body]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    print()
    for who, own, pve in results:
        ratio = percentile(pve, 95) / percentile(own, 95)
        pairs = statistics.median(pair_ratios(pve, own))
        verdict = (
            "met" if 1 / GOAL_RATIO <= ratio <= GOAL_RATIO else "MISSED, /api2 the faster" if ratio < 1 else "MISSED"
        )
        print(
            f"{who}: /api2 p95 / /api p95 = {ratio:.2f} (goal within {GOAL_RATIO}x: {verdict}); "
            f"median pair ratio {pairs:.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps([{"as": w, "api": a, "api2": b} for w, a, b in results], indent=2) + "\n")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
