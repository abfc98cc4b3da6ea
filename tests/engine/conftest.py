"""Fixtures for the cgroup driver tests: drivers under a parent unique to the run, removed afterwards."""

import os
import subprocess
import sys

import pytest

from engine.cgroups import (
    V1Driver,
    V2Driver,
)
from tests.engine.cgroup_support import HAS_V1, MOUNTS, _cleanup, _seq
from tests.engine.cli_support import REPO, cli_service, layout_env, served


@pytest.fixture
def parent() -> str:
    return f"caisson-test-{os.getpid()}-{next(_seq)}"


@pytest.fixture
def v1(parent):
    if not HAS_V1:
        pytest.skip("host has no cgroup v1 memory/cpu hierarchies")
    driver = V1Driver(parent)
    yield driver
    _cleanup(driver)
    assert not any(os.path.exists(os.path.join(r, parent)) for r in driver._roots())


@pytest.fixture
def v2(parent):
    if not MOUNTS.unified:
        pytest.skip("host has no cgroup2 mount")
    driver = V2Driver(parent)
    yield driver
    _cleanup(driver)
    assert not os.path.exists(os.path.join(MOUNTS.unified, parent))


@pytest.fixture
def children():
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.fixture
def lab():
    """A bridge and namespaces for the DHCP and firewall tests, removed afterwards."""
    from tests.engine.netlab import NetLab

    net = NetLab()
    try:
        yield net
    finally:
        net.close()


# ---- the command line, run in-process and through the node's CLI service (tests/engine/test_cli.py) ----
@pytest.fixture(scope="module")
def service(engine):
    """The node's CLI service for the tests' engine layout: (its socket, its log file)."""
    socket_path, log = engine.layout.run / "cli.sock", engine.layout.run / "cli-service.log"
    with cli_service({**layout_env(engine), "CAISSON_CLI_SOCKET": str(socket_path)}, socket_path, log):
        yield socket_path, log


@pytest.fixture(params=["in-process", "service"])
def cli_env(request, engine):
    """The environment of a command line run in-process, or through the CLI service."""
    if request.param == "in-process":
        yield {**layout_env(engine), "CAISSON_CLI_SOCKET": ""}
        return
    socket_path, log = request.getfixturevalue("service")
    before = served(log)
    yield {**layout_env(engine), "CAISSON_CLI_SOCKET": str(socket_path)}
    assert served(log) > before, "no command went through the service"


@pytest.fixture
def cli(cli_env):
    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "engine", *args],
            cwd=REPO,
            env=cli_env,
            capture_output=True,
            text=True,
            input=input,
            timeout=120,
        )

    return run
