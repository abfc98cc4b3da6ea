"""The web tier's fixtures: roles, users with grants, an online node, and the real processes.

``agent`` runs ``python -m tasks.agent`` (a real Celery worker on Redis) and
``web`` runs the ASGI server (uvicorn), both on the test database, so
end-to-end tests go through the same path as production.  Tests using them
need ``transactional_db``: the other processes only see committed rows.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"


@pytest.fixture
def roles(db):
    """The built-in roles (a transactional test's flush removes the rows the migration made)."""
    from webui.models import Role
    from webui.privileges import BUILTIN_ROLES

    return {
        name: Role.objects.update_or_create(name=name, defaults={"privileges": privs, "builtin": True})[0]
        for name, privs in BUILTIN_ROLES.items()
    }


@pytest.fixture
def node(db):
    """This node's row, online (its heartbeat just now)."""
    from django.conf import settings
    from django.utils import timezone

    from webui.models import Node

    row, _ = Node.objects.update_or_create(
        name=settings.CAISSON_NODE, defaults={"last_seen": timezone.now(), "cpus": 2}
    )
    return row


@pytest.fixture
def make_user(db, roles):
    """``make_user("alice", "Operator", "/ct/100")``: a user with that role granted on that path."""
    from django.contrib.auth.models import User

    from webui.models import AccessEntry

    def make(username: str, role: str | None = None, path: str = "/", superuser: bool = False, propagate=True):
        if superuser:
            user = User.objects.create_superuser(username, f"{username}@example.org", PASSWORD)
        else:
            user = User.objects.create_user(username, f"{username}@example.org", PASSWORD)
        if role:
            AccessEntry.objects.create(user=user, role=roles[role], path=path, propagate=propagate)
        return user

    return make


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url() -> str:
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.fail("end-to-end web tests need PostgreSQL: set DATABASE_URL (scripts/test.sh does)")
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


def _wait_for(check, what: str, log: Path, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        if check():
            return
        time.sleep(0.1)
    pytest.fail(f"{what} did not come up within {timeout:g} s:\n{log.read_text()[-4000:]}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def services_env(django_db_setup, django_db_blocker, engine, cgroup_parent, tmp_path_factory) -> dict:
    """Environment for the agent and the web server: the test database and the tests' engine state.

    They share this process's secrets (``CAISSON_SECRETS``), so jobs and channel messages are signed
    and checked as under ``scripts/run.sh``."""
    from django.conf import settings

    return {
        **os.environ,
        "CAISSON_SECRETS": str(settings.CAISSON_SECRETS),
        "DATABASE_URL": database_url(),
        "CAISSON_ROOT": str(engine.layout.root),
        "CAISSON_RUN": str(engine.layout.run),
        "CAISSON_CGROUP_PARENT": cgroup_parent,
        "CAISSON_WEB_DATA": str(tmp_path_factory.mktemp("webdata")),
        "CAISSON_SAMPLE_INTERVAL": "1",
        "DJANGO_SETTINGS_MODULE": "webui.settings",
        "PYTHONPATH": str(REPO),
    }


@pytest.fixture(scope="session")
def agent(services_env, tmp_path_factory):
    """This node's agent, a real Celery worker consuming the node's queue."""
    import redis
    from django.conf import settings

    queue = f"node.{settings.CAISSON_NODE}"
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(queue)  # nothing left from an earlier, killed run
    from tasks.boot import mark_this_boot

    mark_this_boot(Path(services_env["CAISSON_RUN"]))  # no boot startall over the tests' containers
    log = tmp_path_factory.mktemp("agent") / "agent.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tasks.agent", "--concurrency", "2"],
            cwd=REPO,
            env=services_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for(lambda: b" ready." in log.read_bytes(), "the node agent", log, process)
        process.log = log  # what the worker wrote, for tests that check what it logs
        yield process
    finally:
        _stop(process)


@contextlib.contextmanager
def _web_server(services_env, log: Path, *options: str, what: str = "the web server"):
    """``python -m webui.serve`` on a free loopback port with ``options``; yields the port once it answers."""
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "webui.serve", "--host", "127.0.0.1", "--port", str(port), *options],
            cwd=REPO,
            env=services_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def answers() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    try:
        _wait_for(answers, what, log, process)
        yield port
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def web(services_env, tmp_path_factory):
    """The ASGI server (``python -m webui.serve``, uvicorn) on a free loopback port; yields its base URL."""
    with _web_server(services_env, tmp_path_factory.mktemp("web") / "web.log", "--log-level", "info") as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def stored_busybox(engine, busybox_template) -> str:
    """The busybox template in the node's store; returns its volume ID (local:vztmpl/<name>)."""
    engine.layout.templates.mkdir(parents=True, exist_ok=True)
    target = engine.layout.templates / busybox_template.name
    if not target.exists():
        shutil.copy2(busybox_template, target)
    return f"local:vztmpl/{busybox_template.name}"


def wait_job(job, timeout: float = 60.0):
    """Poll the job's row until it ends; returns it refreshed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if not job.active:
            return job
        time.sleep(0.05)
    lines = "\n".join(job.lines.values_list("text", flat=True))
    pytest.fail(f"job {job.pk} ({job.kind}) still {job.status} after {timeout:g} s:\n{lines}")


CONSOLE_GRACE = 2.0  # seconds: the console relay of the tests keeps a dropped session this long


@pytest.fixture(scope="session")
def console_relay(services_env, tmp_path_factory):
    """This node's console relay (``python -m tasks.console_relay``) with a short grace period."""
    import redis
    from django.conf import settings

    from tasks.console_protocol import relay_channel

    layer = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]
    client = redis.Redis.from_url(layer["address"] if isinstance(layer, dict) else layer)
    for key in client.scan_iter(f"*{relay_channel(settings.CAISSON_NODE)}*"):  # nothing from an earlier, killed run
        client.delete(key)
    log = tmp_path_factory.mktemp("console") / "relay.log"
    env = {**services_env, "CAISSON_CONSOLE_GRACE": str(CONSOLE_GRACE)}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tasks.console_relay", "--loglevel", "DEBUG"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for(lambda: b"console relay ready" in log.read_bytes(), "the console relay", log, process)
        process.log = log
        yield process
    finally:
        _stop(process)


# ---- backups: Celery beat, and agents of extra nodes ---------------------------------------------
def start_agent(services_env: dict, node_name: str, log: Path, **env) -> subprocess.Popen:
    """A node agent under another node name (its own queue), e.g. one a test may kill or give mail settings."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tasks.agent", "--concurrency", "2"],
            cwd=REPO,
            env={**services_env, "CAISSON_NODE": node_name, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _wait_for(lambda: b" ready." in log.read_bytes(), f"the agent of node {node_name}", log, process)
    return process


def stop_agent(process: subprocess.Popen) -> None:
    _stop(process)


@pytest.fixture
def beat(services_env, tmp_path):
    """``start()`` runs a real ``celery beat`` (DatabaseScheduler) on the test database; call it twice for two.

    Each checks the schedule table every second; they stop when the test ends.
    """
    started: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        log, pidfile = tmp_path / f"beat{len(started)}.log", tmp_path / f"beat{len(started)}.pid"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "tasks.celery",
                    "beat",
                    "--loglevel",
                    "INFO",
                    "--max-interval",
                    "1",
                    "--pidfile",
                    str(pidfile),
                    "-S",
                    "django_celery_beat.schedulers:DatabaseScheduler",
                ],
                cwd=REPO,
                env=services_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(process)
        _wait_for(
            lambda: b"beat: Starting" in log.read_bytes() or b"Scheduler: Sending" in log.read_bytes(),
            "celery beat",
            log,
            process,
        )
        return process

    yield start
    for process in started:
        _stop(process)


@pytest.fixture(scope="session")
def web_https(services_env, tmp_path_factory):
    """The web server over HTTPS with a certificate of ``python -m webui.tls``, as ``scripts/run.sh`` serves
    it; yields ``(base URL, certificate path)`` (clients verify against that certificate)."""
    from webui.tls import ensure

    cert, key, _ = ensure(tmp_path_factory.mktemp("tls"))
    log = tmp_path_factory.mktemp("web-https") / "web.log"
    options = ("--certfile", str(cert), "--keyfile", str(key), "--log-level", "info")
    with _web_server(services_env, log, *options, what="the HTTPS web server") as port:
        yield f"https://127.0.0.1:{port}", cert
