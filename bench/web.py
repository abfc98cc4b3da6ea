"""The web tier: the container list API with 1,000 containers, and from a click on Start to a running job.

No LXC here: this measures Caisson's own web tier against absolute goals.
Everything it starts is its own: a PostgreSQL database ``caisson_bench_<pid>``
on the server of ``DATABASE_URL`` (default: the local one), Redis databases
13-15, uvicorn (python -m webui.serve) on a free loopback port, and the node agent (a real Celery
worker, so root) with an engine state in a temp dir.  All of it is removed
at the end.

- ``GET /api/containers/?limit=1000`` and ``?limit=100`` over one kept-alive
  HTTP connection with token auth, as an Administrator (every container) and
  as an Operator granted on a pool holding 500 of them; the time is the
  client's round trip on loopback (the server's time plus a few tens of µs).
- ``GET /`` (the dashboard page: the resource tree and the container table,
  1,000 rows each for the Administrator) with a logged-in session, as the
  same two users; the time is again the client's round trip on loopback.
- ``POST /api/containers/<id>/status/start/`` until the agent marks the job
  running (its ``started`` stamp, same host clock), over ~20 starts and stops
  of a busybox container.

Goals: list p95 under 50 ms for ``?limit=100`` (the page size clients use;
``?limit=1000`` is reported against the same line), the dashboard p95 under
100 ms, click to running p95 under 100 ms.

    sudo .venv/bin/python bench/web.py [--runs 100] [--starts 20] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

from webstack import CONTAINERS, POOLED, WebStack, percentile

LIST_GOAL_MS = 50.0
PAGE_GOAL_MS = 100.0
CLICK_GOAL_MS = 100.0


class Bench(WebStack):
    """The web benchmark's measurements over the stack."""

    def page_times(self, port: int, who: str, path: str, expected_rows: int) -> list[float]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Cookie": self.session_cookie(who), "Accept": "text/html"}
        samples = []
        for i in range(self.args.warmup + self.args.runs):
            start = time.perf_counter_ns()
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            body = response.read()
            elapsed = (time.perf_counter_ns() - start) / 1e6
            rows = body.count(b"<tr data-ct-row=")
            if response.status != 200 or rows != expected_rows:
                raise RuntimeError(f"{path} answered {response.status} with {rows} container rows: {body[:300]!r}")
            if i >= self.args.warmup:
                samples.append(elapsed)
        conn.close()
        return samples

    def list_times(self, port: int, token: str, limit: int, expected: int) -> list[float]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        samples = []
        for i in range(self.args.warmup + self.args.runs):
            start = time.perf_counter_ns()
            status, body = self.request(conn, "GET", f"/api/containers/?limit={limit}", token)
            elapsed = (time.perf_counter_ns() - start) / 1e6
            if status != 200 or body["count"] != expected or len(body["results"]) != min(limit, expected):
                raise RuntimeError(f"list answered {status}: {str(body)[:300]}")
            if i >= self.args.warmup:
                samples.append(elapsed)
        conn.close()
        return samples

    def click_to_running(self, port: int, token: str) -> list[float]:
        from django.utils import timezone

        from engine.builders.busybox import build_busybox
        from webui.models import Job, StoredTemplate

        store = self.workdir / "state" / "template" / "cache"
        store.mkdir(parents=True, exist_ok=True)
        archive = build_busybox(store)
        StoredTemplate.objects.get_or_create(
            node_id=self._node_id(),
            name=archive.name,
            defaults={"size": archive.stat().st_size, "modified": timezone.now()},
        )
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        ctid = 9000
        self.heartbeat()
        status, body = self.request(
            conn,
            "POST",
            "/api/containers/",
            token,
            {
                "node": "benchnode",
                "ctid": ctid,
                "hostname": "bench-web",
                "password": "bench-pw",
                "password_confirm": "bench-pw",
                "template": f"local:vztmpl/{archive.name}",
                "memory": 128,
                "swap": 0,
                "disk_size": 1,
            },
        )
        if status != 202:
            raise RuntimeError(f"create answered {status}: {body}")
        self.wait_job(body["job"]["id"])
        samples = []
        for i in range(self.args.warmup + self.args.starts):
            self.heartbeat()
            time.sleep(0.2)  # a click comes after a pause, not back to back with the last job
            clicked = time.time()
            status, body = self.request(conn, "POST", f"/api/containers/{ctid}/status/start/", token)
            if status != 202:
                raise RuntimeError(f"start answered {status}: {body}")
            job_id = body["job"]["id"]
            while True:
                started = Job.objects.filter(pk=job_id).values_list("started", flat=True).first()
                if started:
                    break
                time.sleep(0.002)
            if i >= self.args.warmup:
                samples.append((started.timestamp() - clicked) * 1e3)
            self.wait_job(job_id)
            status, body = self.request(conn, "POST", f"/api/containers/{ctid}/status/stop/", token)
            if status != 202:
                raise RuntimeError(f"stop answered {status}: {body}")
            self.wait_job(body["job"]["id"])
        conn.close()
        return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100, help="list requests per case (default: %(default)s)")
    parser.add_argument("--starts", type=int, default=20, help="start/stop cycles (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the raw samples here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/web.py runs the node agent, which needs root")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    rows = []
    with contextlib.ExitStack() as stack:
        bench = Bench(args, stack)
        bench.database()
        tokens = bench.rows()
        port = bench.web()
        expected = {"Administrator": CONTAINERS, "Operator on a pool of 500": POOLED}
        for who, token in tokens.items():
            for limit in (1000, 100):
                samples = bench.list_times(port, token, limit, expected[who])
                rows.append((f"GET /api/containers/?limit={limit} as {who}", samples, LIST_GOAL_MS))
        for who in tokens:
            rows.append(
                (
                    f"GET / (dashboard, {expected[who]} rows) as {who}",
                    bench.page_times(port, who, "/", expected[who]),
                    PAGE_GOAL_MS,
                )
            )
        bench.agent()
        rows.append(
            (
                "POST .../status/start/ until the job runs",
                bench.click_to_running(port, tokens["Administrator"]),
                CLICK_GOAL_MS,
            )
        )
    print(
        f"Caisson web tier, {CONTAINERS} containers on PostgreSQL, uvicorn on loopback, token auth "
        f"(list: {args.runs} requests per case; start: {args.starts} cycles)\n"
    )
    head = ["metric (ms)", "p50", "p95", "min", "max", "goal (p95)", ""]
    body = [
        [
            name,
            f"{statistics.median(s):.1f}",
            f"{percentile(s, 95):.1f}",
            f"{min(s):.1f}",
            f"{max(s):.1f}",
            f"< {goal:g}",
            "met" if percentile(s, 95) < goal else "MISSED",
        ]
        for name, s, goal in rows
    ]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    for line in [head, ["-" * w for w in widths], *body]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "title": "web tier",
                    "rows": [
                        {
                            "metric": name,
                            "unit": "ms",
                            "goal_p95": goal,
                            "samples": s,
                            "p50": statistics.median(s),
                            "p95": percentile(s, 95),
                        }
                        for name, s, goal in rows
                    ],
                },
                indent=2,
            )
            + "\n"
        )
        print(f"\nraw samples: {args.json}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
