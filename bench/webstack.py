"""The web tier the web benchmarks measure, all their own: a PostgreSQL database ``caisson_bench_<pid>``
on the server of ``DATABASE_URL`` (default: the local one) with 1,000 container mirrors, an Administrator
and an Operator on a pool of 500 with their API tokens, Redis databases 13-15, uvicorn
(``python -m webui.serve``) on a free loopback port, and on demand the node agent (a real Celery worker,
so root) with an engine state in a temp dir.  All of it is removed when the ``ExitStack`` closes.

``bench/web.py`` and ``bench/pve_api.py`` time requests against it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
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


class WebStack:
    """Set-up and tear-down of the stack (callbacks on ``stack``), and the requests and rows the benchmarks share."""

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

    @staticmethod
    def _node_id() -> int:
        from webui.models import Node

        return Node.objects.get(name="benchnode").pk
