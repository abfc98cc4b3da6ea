"""Tests of the v2 cgroup driver (engine.cgroups.v2) against the real kernel (run as root).

The v1 driver is exercised on the host's v1 hierarchies; the v2 driver on the
host's cgroup2 mount (on a hybrid host that is /sys/fs/cgroup/unified, which
has few or no controllers: limit tests for a missing controller are skipped
with its name). Every test uses a parent cgroup unique to this run and the
fixtures remove it.
"""

import errno
import os
import signal
import sys

import pytest

from engine.cgroups import (
    DeviceRule,
    Limits,
    V2Driver,
    devices_bpf,
)
from engine.cgroups.base import MiB
from engine.errors import NotSupported
from tests.engine.cgroup_support import (
    MOUNTS,
    TREE,
    cg,
    probe_devices,
    read,
    sleeper,
    spawn,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="cgroup tests need root")


def test_v2_create_layout(v2):
    """One directory on the cgroup2 mount, which is also the cgroup namespace's root (the rest: the contract)."""
    v2.create("ct")
    assert os.path.isdir(cg(v2, None, "ct"))
    assert v2.ns_path("ct") == cg(v2, None, "ct")


def test_v2_kill_uses_cgroup_kill(v2, children, monkeypatch):
    v2.create("ct")
    if not os.path.exists(cg(v2, None, "ct", "cgroup.kill")):
        pytest.skip("kernel lacks cgroup.kill (Linux < 5.14)")
    monkeypatch.setattr(V2Driver, "_kill_frozen", lambda *a, **k: pytest.fail("fallback used"))
    proc = spawn(v2, "ct", children, TREE)
    assert proc.stdout.readline().strip() == "ready"
    assert len(v2.procs("ct")) == 4
    v2.kill("ct", timeout=5)
    assert v2.procs("ct") == [] and proc.wait(timeout=5) == -signal.SIGKILL


def test_v2_kill_fallback_freezes_and_kills(v2, children):
    v2.create("ct")
    proc = spawn(v2, "ct", children, TREE)
    assert proc.stdout.readline().strip() == "ready"
    v2._kill_frozen("ct", 5, can_freeze=os.path.exists(cg(v2, None, "ct", "cgroup.freeze")))
    assert v2.procs("ct") == [] and proc.wait(timeout=5) == -signal.SIGKILL


SUBCGROUP_AS_UID = """
import os, sys
top = sys.argv[1]
os.setgroups([]); os.setgid(100000); os.setuid(100000)
os.mkdir(os.path.join(top, "init.scope"))
with open(os.path.join(top, "init.scope", "cgroup.procs"), "w") as fh:
    fh.write(str(os.getpid()))
print(open("/proc/self/cgroup").read().strip().splitlines()[-1])
"""


def test_v2_delegation(v2, children):
    v2.create("ct", owner_uid=100000)
    for name in ("", "cgroup.procs", "cgroup.threads", "cgroup.subtree_control"):
        st = os.stat(cg(v2, None, "ct", name))
        assert (st.st_uid, st.st_gid) == (100000, 100000), name
    assert os.stat(cg(v2, None, "ct", "cgroup.controllers")).st_uid == 0
    # what a systemd in a user namespace does: make a sub-cgroup as the mapped root and move into it
    proc = spawn(v2, "ct", children, argv=[sys.executable, "-S", "-c", SUBCGROUP_AS_UID, cg(v2, None, "ct")])
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out.strip() == f"0::/{v2.parent}/ct/init.scope"
    assert os.stat(cg(v2, None, "ct", "init.scope")).st_uid == 100000


def test_v2_device_filter(v2, children, tmp_path):
    v2.create("ct", extra_devices=[DeviceRule("c", 1, 11, "r")])  # kmsg read-only: checks the access mask
    assert len(devices_bpf.attached(cg(v2, None, "ct"))) == 1
    out = probe_devices(v2, "ct", children, tmp_path)
    assert out == {"null": "ok", "kmsg": errno.EPERM, "mknod": "ok", "kmsg_ro": "ok"}


def test_v2_exec_leaf_when_controllers_enabled(v2, children):
    v2.create("ct")
    offered = read(cg(v2, None, "ct", "cgroup.controllers")).split()
    if not offered:
        pytest.skip(f"cgroup2 mount {MOUNTS.unified} enables no controller for containers; no leaf needed")
    with open(cg(v2, None, "ct", "cgroup.subtree_control"), "w") as fh:
        fh.write(f"+{offered[0]}")
    assert v2.procs_file("ct") == [cg(v2, None, "ct", ".caisson/cgroup.procs")]
    proc = sleeper(children)
    v2.attach("ct", proc.pid)
    assert v2.procs("ct") == [proc.pid]


def _need_v2(v2, ctid: str, controller: str) -> None:
    if controller not in read(cg(v2, None, ctid, "cgroup.controllers")).split():
        pytest.skip(f"cgroup2 mount {MOUNTS.unified} lacks the '{controller}' controller")


V2_LIMITS = [
    ("memory", Limits(memory_mb=64), {"memory.max": str(64 * MiB)}, {"memory.max": "max"}),
    (
        "cpu",
        Limits(cpulimit=0.5, cpuunits=20000),
        {"cpu.max": "50000 100000", "cpu.weight": "10000"},
        {"cpu.max": "max 100000", "cpu.weight": "100"},
    ),
    ("cpuset", Limits(cpus="0"), {"cpuset.cpus": "0"}, {"cpuset.cpus": ""}),
    ("pids", Limits(pids=7), {"pids.max": "7"}, {"pids.max": "max"}),
]


@pytest.mark.parametrize("controller,limits,expect,reset", V2_LIMITS, ids=[x[0] for x in V2_LIMITS])
def test_v2_limits_read_back(v2, children, controller, limits, expect, reset):
    v2.create("ct")
    _need_v2(v2, "ct", controller)
    v2.attach("ct", sleeper(children).pid)
    v2.apply("ct", limits)
    for name, value in expect.items():
        assert read(cg(v2, None, "ct", name)) == value
    v2.apply("ct", Limits())
    for name, value in reset.items():
        assert read(cg(v2, None, "ct", name)) == value


def test_v2_swap(v2):
    v2.create("ct")
    _need_v2(v2, "ct", "memory")
    if not os.path.exists(cg(v2, None, "ct", "memory.swap.max")):
        pytest.skip("kernel has no memory.swap.max (swap accounting off)")
    v2.apply("ct", Limits(memory_mb=64, swap_mb=32))
    assert read(cg(v2, None, "ct", "memory.swap.max")) == str(32 * MiB)


def test_v2_missing_controller_is_not_supported(v2):
    v2.create("ct")
    offered = read(cg(v2, None, "ct", "cgroup.controllers")).split()
    cases = [
        ("memory", Limits(memory_mb=64)),
        ("pids", Limits(pids=5)),
        ("cpu", Limits(cpuunits=50)),
        ("cpuset", Limits(cpus="0")),
        ("io", Limits(ioweight=50)),
    ]
    missing = [(c, lim) for c, lim in cases if c not in offered]
    if not missing:
        pytest.skip("every controller is available on this cgroup2 mount")
    for controller, limits in missing:
        with pytest.raises(NotSupported, match=f"'{controller}'"):
            v2.apply("ct", limits)
    v2.apply("ct", Limits())  # resetting absent controllers is not an error
