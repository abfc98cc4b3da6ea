"""``scripts/run.sh`` in a scratch state directory: who each process runs as, and the secrets it made.

Its own state root, web data (SQLite), secrets directory, node name, cgroup parent, web port and
Redis port (a password-protected redis-server it starts as the ``redis`` user), so the shared
PostgreSQL and Redis are not touched. Checks ``ps -o user``: the web server and beat as the
unprivileged ``caisson`` user, only the agent and the console relay as root, Redis as ``redis``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import ssl
import stat
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gone(pid: int) -> bool:
    """The process has exited (a zombie counts: under a test engine's subreaper it is this process's child)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def user_of(pid: int) -> str:
    return subprocess.run(["ps", "-o", "user=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()


@pytest.fixture
def scratch(busybox_template):
    if shutil.which("redis-server") is None or not any(Path(p).exists() for p in ("/usr/bin/setpriv",)):
        pytest.skip("redis-server and setpriv are needed")
    try:
        pwd.getpwnam("redis")
    except KeyError:
        pytest.skip("no 'redis' user (Debian's redis-server package makes it)")
    base = Path(tempfile.mkdtemp(prefix="caisson-run-", dir="/var/tmp"))
    base.chmod(0o711)  # the web user passes through to its data directory
    root = base / "root"
    (root / "template" / "cache").mkdir(parents=True)
    shutil.copy2(busybox_template, root / "template" / "cache" / busybox_template.name)
    redis_port, web_port = free_port(), free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "CAISSON_REDIS_DBS", "DJANGO_SECRET_KEY", "CAISSON_WEB_DATA")
    }
    env.update(
        {
            "CAISSON_ROOT": str(root),
            "CAISSON_RUN": str(base / "run"),
            "CAISSON_SECRETS": str(base / "secrets"),
            "CAISSON_NODE": f"runsh{os.getpid()}",
            "CAISSON_CGROUP_PARENT": f"caisson-runsh-{os.getpid()}",
            "CAISSON_PORT": str(web_port),
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}",
            "CAISSON_ADMIN_PASSWORD": "scratch admin password",
            "CAISSON_SAMPLE_INTERVAL": "1",
            "CAISSON_DEFAULT_BRIDGE": "no",
        }
    )  # the host keeps its own bridges: tests/engine/test_default_bridge.py
    yield {"base": base, "root": root, "env": env, "web_port": web_port, "redis_port": redis_port}
    subprocess.run(["bash", "scripts/run.sh", "stop"], cwd=REPO, env=env, capture_output=True, timeout=120)
    pidfile = root / "redis" / "redis.pid"
    if pidfile.exists():
        subprocess.run(["kill", pidfile.read_text().strip()], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


def run(scratch, *args: str) -> str:
    done = subprocess.run(
        ["bash", "scripts/run.sh", *args], cwd=REPO, env=scratch["env"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_run_sh_keeps_root_to_the_agent_and_the_relay(scratch):
    root, secrets_dir = scratch["root"], scratch["base"] / "secrets"
    output = run(scratch)
    pids = {
        name: int((root / "daemons" / "run" / f"{name}.pid").read_text())
        for name in ("web", "agent", "beat", "console")
    }
    users = {name: user_of(pid) for name, pid in pids.items()}
    assert users == {"web": "caisson", "beat": "caisson", "agent": "root", "console": "root"}, users
    redis_pid = int((root / "redis" / "redis.pid").read_text())
    assert user_of(redis_pid) == "redis"
    # Its password is nowhere on a command line.
    password = (secrets_dir / "redis.password").read_text().strip()
    assert password not in Path(f"/proc/{redis_pid}/cmdline").read_text()
    # HTTPS by default, with the certificate made at set-up (its fingerprint printed), verified here.
    from webui.tls import fingerprint

    cert = secrets_dir / "caisson-ssl.pem"
    assert f"SHA-256 fingerprint {fingerprint(cert)}" in output
    context = ssl.create_default_context(cafile=str(cert))
    with urllib.request.urlopen(
        f"https://127.0.0.1:{scratch['web_port']}/healthz", timeout=5, context=context
    ) as answer:
        assert answer.status == 200
    caisson = pwd.getpwnam("caisson").pw_uid
    for name in ("secret_key", "redis.password", "channel.key", "celery.key", "celery.pem", "caisson-ssl.key"):
        info = (secrets_dir / name).stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (caisson, 0o600), name
    data = root / "web"
    assert data.stat().st_uid == caisson and (data / "caisson.sqlite3").stat().st_uid == caisson
    assert (root / "daemons").stat().st_uid == 0 and stat.S_IMODE((root / "daemons").stat().st_mode) == 0o700
    # Beat (the web user) signs the node's tick; the agent (root) runs it, both through the password.
    agent_log = root / "daemons" / "log" / "agent.log"
    deadline = time.monotonic() + 60
    while "Task caisson.node.tick[" not in agent_log.read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "Task caisson.node.tick[" in agent_log.read_text(), agent_log.read_text()[-3000:]
    assert "Can't decode message body" not in agent_log.read_text()
    status = run(scratch, "status")
    assert f"web: running (pid {pids['web']}, user caisson)" in status
    assert f"agent: running (pid {pids['agent']}, user root)" in status
    again = run(scratch)  # idempotent: nothing started twice
    assert "web already running" in again and "agent already running" in again
    run(scratch, "stop")
    assert "web: stopped" in run(scratch, "status")
    assert all(gone(pid) for pid in pids.values())
