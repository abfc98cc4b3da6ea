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
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CONTAINERS = 1000
POOLED = 500
LIST_GOAL_MS = 50.0
PAGE_GOAL_MS = 100.0
CLICK_GOAL_MS = 100.0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, what: str, process: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {timeout:g} s:\n{log.read_text()[-3000:]}")


class Bench:
    def __init__(self, args, stack: contextlib.ExitStack):
        self.args, self.stack = args, stack
        self.workdir = Path(tempfile.mkdtemp(prefix="caisson-bench-web-"))
        stack.callback(shutil.rmtree, self.workdir, True)
        base = urlparse(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/caisson"))
        self.dbname = f"caisson_bench_{os.getpid()}"
        self.admin_dsn = base._replace(path="/postgres").geturl()
        self.env = {
            **os.environ,
            "DATABASE_URL": base._replace(path=f"/{self.dbname}").geturl(),
            "CAISSON_NODE": "benchnode",
            "CAISSON_REDIS_DBS": "13,14,15",
            "CAISSON_ROOT": str(self.workdir / "state"),
            "CAISSON_RUN": str(self.workdir / "run"),
            "CAISSON_CGROUP_PARENT": "caisson-bench-web",
            "CAISSON_WEB_DATA": str(self.workdir / "web"),
            "CAISSON_LOG_LEVEL": "WARNING",
            "DJANGO_SETTINGS_MODULE": "webui.settings",
            "PYTHONPATH": str(REPO),
        }
        os.environ.update(self.env)

    # ---- set-up ---------------------------------------------------------------------------------------
    def database(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.dbname}"')
        self.stack.callback(self._drop_database)
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)

    def _drop_database(self) -> None:
        import psycopg
        from django.db import connections

        connections.close_all()
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')

    def rows(self) -> dict[str, str]:
        """1,000 container mirrors (500 in pool 'half'), an admin and an Operator on that pool; their tokens."""
        from django.contrib.auth.models import User
        from django.utils import timezone

        from webui.models import AccessEntry, ApiToken, Container, Node, Pool, Role
        from webui.privileges import BUILTIN_ROLES

        for name, privileges in BUILTIN_ROLES.items():
            Role.objects.update_or_create(name=name, defaults={"privileges": privileges, "builtin": True})
        node = Node.objects.create(name="benchnode", last_seen=timezone.now(), cpus=os.cpu_count() or 1)
        other = Node.objects.create(name="benchnode2", last_seen=timezone.now())
        half = Pool.objects.create(name="half")
        now = timezone.now()
        Container.objects.bulk_create(
            [
                Container(
                    ctid=10_000 + i,
                    node=node if i % 2 else other,
                    pool=half if i < POOLED else None,
                    hostname=f"ct{i:04d}.example.org",
                    status="running" if i % 3 else "stopped",
                    started_at=now,
                    init="systemd",
                    ipv4=[f"10.0.{i // 250}.{i % 250 + 1}"],
                    config={
                        "hostname": f"ct{i:04d}",
                        "memory": "512",
                        "cores": "1",
                        "net0": "name=eth0,bridge=vmbr0,ip=dhcp",
                    },
                    cpu=0.01,
                    memory_used=50 << 20,
                    memory_limit=512 << 20,
                )
                for i in range(CONTAINERS)
            ]
        )
        admin = User.objects.create_user("bench-admin", password="x" * 12)
        AccessEntry.objects.create(user=admin, role=Role.objects.get(name="Administrator"), path="/")
        operator = User.objects.create_user("bench-operator", password="x" * 12)
        AccessEntry.objects.create(user=operator, role=Role.objects.get(name="Operator"), path="/pool/half")
        self.users = {"Administrator": admin, "Operator on a pool of 500": operator}
        return {
            "Administrator": ApiToken.issue(admin, "bench")[1],
            "Operator on a pool of 500": ApiToken.issue(operator, "bench")[1],
        }

    def session_cookie(self, who: str) -> str:
        """A logged-in session of the user (the pages take sessions, not tokens), as a Cookie header."""
        from django.test import Client

        client = Client()
        client.force_login(self.users[who])
        return f"sessionid={client.cookies['sessionid'].value}"

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

    def start(self, name: str, argv: list[str]) -> tuple[subprocess.Popen, Path]:
        log = self.workdir / f"{name}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                argv, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.stack.callback(self._stop, process)
        return process, log

    @staticmethod
    def _stop(process: subprocess.Popen) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def web(self) -> int:
        port = free_port()
        process, log = self.start(
            "web", [sys.executable, "-m", "webui.serve", "--host", "127.0.0.1", "--port", str(port)]
        )

        def answers() -> bool:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
            return False

        wait_until(answers, "the web server", process, log)
        return port

    def agent(self) -> None:
        import redis
        from django.conf import settings

        redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("node.benchnode")
        process, log = self.start(
            "agent", [sys.executable, "-m", "tasks.agent", "--concurrency", "2", "--loglevel", "WARNING"]
        )
        wait_until(lambda: b"ready" in log.read_bytes() or self._agent_ready(), "the node agent", process, log)
        self.stack.callback(self._destroy_containers)

    @staticmethod
    def _agent_ready() -> bool:
        from django_celery_beat.models import PeriodicTask

        return PeriodicTask.objects.filter(name="tick benchnode").exists()

    def _destroy_containers(self) -> None:
        from engine.lifecycle import Engine

        engine = Engine(root=self.workdir / "state", run_dir=self.workdir / "run", cgroup_parent="caisson-bench-web")
        for ctid in engine.ids():
            with contextlib.suppress(Exception):
                engine.destroy(ctid, force=True)
        for path in Path("/sys/fs/cgroup").glob("**/caisson-bench-web"):
            with contextlib.suppress(OSError):
                path.rmdir()

    # ---- measurements ------------------------------------------------------------------------------------
    @staticmethod
    def request(conn: http.client.HTTPConnection, method: str, path: str, token: str, body=None):
        headers = {"Authorization": f"Token {token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        return response.status, json.loads(payload) if payload else None

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

    def heartbeat(self) -> None:
        from django.utils import timezone

        from webui.models import Node

        Node.objects.filter(name="benchnode").update(last_seen=timezone.now())  # beat does not run here

    def wait_job(self, job_id: int, timeout: float = 60.0):
        from webui.models import Job

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = Job.objects.get(pk=job_id)
            if not job.active:
                if job.status != "ok":
                    lines = "\n".join(job.lines.values_list("text", flat=True))
                    raise RuntimeError(f"job {job.kind} ended {job.status}: {job.message}\n{lines}")
                return job
            time.sleep(0.01)
        raise RuntimeError(f"job {job_id} still running after {timeout:g} s")

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

    @staticmethod
    def _node_id() -> int:
        from webui.models import Node

        return Node.objects.get(name="benchnode").pk


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
