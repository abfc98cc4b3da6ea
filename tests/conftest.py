"""Shared fixtures: a private engine state per test session, real templates, real containers."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Command lines run by the tests are run in-process unless a test asks for a CLI service: a node agent
# this machine runs for real (another checkout's code) must never answer them.
os.environ["CAISSON_CLI_SOCKET"] = ""

TEMPLATE_CACHE = Path(os.environ.get("CAISSON_TEST_CACHE", Path.home() / ".cache" / "caisson" / "templates"))


def read_until_closed(fd: int, timeout: float = 30.0) -> bytes:
    """Everything a pty master (or pipe) gives until the other side closes, bounded in time."""
    import select
    import time

    output = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the terminal's last user closed it
            break
        if not chunk:
            break
        output += chunk
    return output


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: builds or boots a full Debian system (about a minute)")
    _retry_flush_on_deadlock()


def _retry_flush_on_deadlock(attempts: int = 5) -> None:
    """A transactional test's teardown empties every table with one TRUNCATE; the session's agent and web
    server keep writing meanwhile (heartbeats, samples, a job's last lines), and a transaction of theirs that
    holds one table while it waits for another makes PostgreSQL abort one side as a deadlock. When the
    TRUNCATE is the side aborted, its transaction is rolled back whole, so it is simply tried again; the
    next test would otherwise start on the last one's rows."""
    import time

    from django.core.management.base import CommandError
    from django.test import TransactionTestCase

    flush = TransactionTestCase._fixture_teardown

    def _deadlocked(error: BaseException) -> bool:
        while error is not None:
            if type(error).__name__ == "DeadlockDetected":
                return True
            error = error.__cause__
        return False

    def fixture_teardown(self):
        for attempt in range(attempts):
            try:
                return flush(self)
            except CommandError as error:
                if attempt == attempts - 1 or not _deadlocked(error):
                    raise
                time.sleep(0.2 * (attempt + 1))

    TransactionTestCase._fixture_teardown = fixture_teardown


@pytest.fixture(scope="session")
def busybox_template(tmp_path_factory) -> Path:
    from engine.builders.busybox import build_busybox

    return build_busybox(tmp_path_factory.mktemp("templates"))


@pytest.fixture(scope="session")
def cgroup_parent() -> str:
    return f"caisson-test-{os.getpid()}"


@pytest.fixture(scope="session")
def engine(tmp_path_factory, cgroup_parent):
    """One engine for the session, acting as the node agent does (it reaps its containers' inits)."""
    from engine.lifecycle import Engine

    base = tmp_path_factory.mktemp("node")
    node = Engine(root=base / "state", run_dir=base / "run", cgroup_parent=cgroup_parent, reaper=True)
    yield node
    for ctid in node.ids():
        try:
            node.destroy(ctid, force=True)
        except Exception:  # noqa: BLE001 - best effort; the leak test below reports leftovers
            pass
    for root in node.cgroups.mounts.v1_roots() + ([node.cgroups.mounts.unified] if node.cgroups.mounts.unified else []):
        shutil.rmtree(os.path.join(root, cgroup_parent), ignore_errors=True)


@pytest.fixture
def ctid_factory(engine):
    """Hands out free container IDs (no container, no backup of that ID in the node's dump directory) and
    destroys what the test created, its backups included."""
    made: list[int] = []
    counter = [100 + (os.getpid() % 50) * 1000]
    dump = engine.layout.root / "dump"

    def backups(ctid: int) -> list[Path]:
        return list(dump.glob(f"vzdump-lxc-{ctid}-*")) if dump.is_dir() else []

    def next_id() -> int:
        while True:
            counter[0] += 1
            if not engine.exists(counter[0]) and not backups(counter[0]):
                made.append(counter[0])
                return counter[0]

    yield next_id
    for ctid in made:
        if engine.exists(ctid):
            engine.destroy(ctid, force=True)
        for path in backups(ctid):
            path.unlink(missing_ok=True)


@pytest.fixture
def container(engine, busybox_template, ctid_factory):
    """A running busybox container."""
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": f"bb{ctid}", "memory": "128", "swap": "0"})
    engine.start(ctid)
    return ctid
