"""Fixtures for the cgroup driver tests: drivers under a parent unique to the run, removed afterwards."""

import os
import subprocess

import pytest

from engine.cgroups import (
    V1Driver,
    V2Driver,
)
from tests.engine.cgroup_support import HAS_V1, MOUNTS, _cleanup, _seq


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
