"""A Debian 12 rootfs made with debootstrap boots systemd as PID 1, unprivileged."""

from __future__ import annotations

import time

import pytest

from tests.conftest import TEMPLATE_CACHE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def debian_template():
    from engine.builders.debian import build_debian

    TEMPLATE_CACHE.mkdir(parents=True, exist_ok=True)
    return build_debian(TEMPLATE_CACHE)


def wait_running(engine, ctid, seconds=60.0) -> str:
    deadline = time.monotonic() + seconds
    state = ""
    while time.monotonic() < deadline:
        _, out, _ = engine.exec_output(ctid, ["systemctl", "is-system-running"])
        state = out.decode().strip()
        if state in ("running", "degraded"):
            return state
        time.sleep(0.5)
    return state


def test_debian_boots_systemd_and_powers_off(engine, debian_template, ctid_factory):
    ctid = ctid_factory()
    engine.create(ctid, debian_template, {"hostname": "deb12", "memory": "512"})
    assert engine.config(ctid).get("ostype") == "debian"
    status = engine.start(ctid)
    assert status.init == "systemd"
    state = wait_running(engine, ctid)
    assert state in ("running", "degraded"), engine.exec_output(ctid, ["systemctl", "--failed", "--no-pager"])
    code, out, _ = engine.exec_output(ctid, ["sh", "-c", "cat /proc/1/comm; hostname; systemd-detect-virt; id -u"])
    assert out.decode().split() == ["systemd", "deb12", "lxc", "0"]
    # systemd manages its own cgroup subtree inside the container's cgroup namespace.
    code, out, _ = engine.exec_output(ctid, ["cat", "/proc/self/cgroup"])
    assert b"0::/init.scope" in out
    code, out, _ = engine.exec_output(ctid, ["systemctl", "show", "-p", "Virtualization", "--value"])
    assert out.strip() == b"lxc"
    engine.shutdown(ctid, timeout=60, force_stop=False)  # raises unless systemd powers off by itself
    assert engine.status(ctid).status == "stopped"
    assert not engine.cgroups.exists(str(ctid))
