"""Private services a fault test may stop and start: a PostgreSQL cluster and a redis-server of its own, and a
web server on a port that stays the same across its restarts.

The machine's PostgreSQL and Redis are shared with other test runs, so a test
never restarts them: it starts its own (``initdb`` + ``pg_ctl`` as the
postgres user, a data directory in a temporary directory, a free loopback
port), points a web server and a node agent at it, and restarts that.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.webui.conftest import PASSWORD, REPO, _wait_for, free_port


def _pg_bin(tool: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}")) or [shutil.which(tool)]
    if not found or found[-1] is None:
        pytest.fail(f"PostgreSQL's {tool} is not installed (scripts/setup.sh installs postgresql)")
    return found[-1]


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of the test's own, run by the postgres user."""

    data: Path
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/caisson"

    def _ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.data.parent} -c listen_addresses=127.0.0.1 -c fsync=off"
        command = ["runuser", "-u", "postgres", "--", _pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log)]
        done = subprocess.run([*command, "-w", "-o", options, *args], capture_output=True, timeout=120)
        assert done.returncode == 0, f"pg_ctl {args}: {done.stderr.decode()}\n{self.log.read_text()[-2000:]}"

    def start(self) -> None:
        self._ctl("start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "stop")

    def answers(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                return conn.execute("select 1").fetchone() == (1,)
        except psycopg.OperationalError:
            return False

    def query(self, sql: str, *args) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url, connect_timeout=5) as conn:
            return conn.execute(sql, args).fetchall()


@contextlib.contextmanager
def private_postgres():
    """``initdb`` a cluster in a fresh temporary directory, start it on a free port, make the ``caisson``
    database; stop it (immediate) and remove it afterwards."""
    top = Path(tempfile.mkdtemp(prefix="caisson-pg-"))
    top.chmod(0o755)
    shutil.chown(top, "postgres", "postgres")
    cluster = PrivatePostgres(top / "data", free_port(), top / "postgres.log")
    done = subprocess.run(
        ["runuser", "-u", "postgres", "--", _pg_bin("initdb"), "-D", str(cluster.data), "-A", "trust", "-N"]
        + ["-U", "postgres", "-E", "UTF8"],
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()
    cluster.log.touch()
    shutil.chown(cluster.log, "postgres", "postgres")
    try:
        cluster.start()
        import psycopg

        with psycopg.connect(f"postgres://postgres@127.0.0.1:{cluster.port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE caisson")
        yield cluster
    finally:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            cluster.stop("immediate")
        shutil.rmtree(top, ignore_errors=True)


def manage(env: dict, *args: str, script: str | None = None) -> str:
    """``manage.py ARGS`` (or a shell script) against ``env``'s database; returns its output."""
    command = [sys.executable, "manage.py", *args] if script is None else [sys.executable, "-c", script]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return done.stdout.decode()


MAKE_ADMIN = f"""
import django
django.setup()
from django.contrib.auth.models import User
User.objects.create_superuser("ops", "ops@example.org", {PASSWORD!r})
"""


class PrivateRedis:
    """A redis-server of the test's own on a free loopback port, without persistence: a restart loses its
    data, as a Redis restarted without its dump does."""

    def __init__(self, directory: Path):
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + ["--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    return
            assert time.monotonic() < deadline, "the private redis-server did not answer"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # as a crash: nothing saved
            self.process.wait(10)


class Web:
    """``python -m webui.serve`` on one port for its whole life, restartable (SIGTERM or SIGKILL)."""

    def __init__(self, env: dict, log_dir: Path):
        self.env, self.log_dir, self.port = env, log_dir, free_port()
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        log = self.log_dir / f"web{self.starts}.log"
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "webui.serve", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        import requests

        def answers() -> bool:
            try:
                return requests.get(f"{self.base}/login/", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        _wait_for(answers, "the web server", log, self.process)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def login(web: Web, username: str = "ops"):
    """A requests session signed in through the login form; it sends the CSRF token on writes."""
    import requests

    session = requests.Session()
    session.get(f"{web.base}/login/", timeout=30)
    answer = session.post(
        f"{web.base}/login/",
        data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": session.cookies["csrftoken"]},
        headers={"Referer": f"{web.base}/login/"},
        timeout=30,
        allow_redirects=False,
    )
    assert answer.status_code == 302, answer.text[-2000:]
    session.headers["X-CSRFToken"] = session.cookies["csrftoken"]
    session.headers["Referer"] = f"{web.base}/"
    return session


class Live:
    """A ``/ws/live/`` socket of a signed-in session, subscribed to ``groups``; collects the events."""

    def __init__(self, web: Web, session, groups: list[str]):
        from websockets.sync.client import connect

        cookie = "; ".join(f"{k}={v}" for k, v in session.cookies.items())
        self.stack = contextlib.ExitStack()
        self.socket = self.stack.enter_context(
            connect(
                f"ws://127.0.0.1:{web.port}/ws/live/",
                additional_headers={"Cookie": cookie, "Origin": web.base},
                open_timeout=30,
            )
        )
        self.socket.send(json.dumps({"subscribe": groups}))
        answer = self.next(30)
        assert answer and answer["type"] == "subscribed" and not answer["denied"], answer
        self.events: list[dict] = []

    def next(self, timeout: float) -> dict | None:
        try:
            return json.loads(self.socket.recv(timeout))
        except TimeoutError:
            return None

    def until(self, check, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = self.next(max(0.1, deadline - time.monotonic()))
            if event is not None:
                self.events.append(event)
                if check(event):
                    return event
        pytest.fail(f"no live event for {what} within {timeout:g} s; saw {self.events[-5:]}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stack.close()


def wait_file(path: Path, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, "the agent died before the job reached its held step"
        assert time.monotonic() < deadline, f"the job never reached its held step ({path})"
        time.sleep(0.05)


def print_logs(directory: Path, lines: int = 60) -> None:
    """The tails of the processes' logs, for the report of a failed test (its temporary directory may be
    gone by the time someone looks)."""
    for log in sorted(directory.glob("*.log")):
        text = log.read_text(errors="replace").splitlines()
        print(f"---- {log.name} (last {lines} lines) ----", *text[-lines:], sep="\n")
