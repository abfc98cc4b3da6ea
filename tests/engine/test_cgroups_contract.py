"""One contract, run against every cgroup driver this host can run (v1 hierarchies, the cgroup2 mount).

What a driver promises does not depend on its kind: create, attach, procs (sub-cgroups
included), stats, freeze, kill and destroy behave alike; a limit the host can apply takes
effect, and a limit the host cannot apply is refused with NotSupported naming the setting
and what the host lacks, before anything is written.  What only one kind has (v1's
per-controller layout, v2's cgroup.kill and BPF device filter) is tested in
test_cgroups_v1.py and test_cgroups_v2.py. Hosts differ (BFQ or not, controllers on the
cgroup2 mount or not): each test asserts whichever of the two this host must give.
"""

import errno
import os
import signal

import pytest

from engine.cgroups import Limits
from engine.cgroups.base import MiB
from engine.errors import InvalidState, NotFound, NotSupported, ValidationError
from tests.engine.cgroup_support import (
    FORK,
    MOUNTS,
    SPIN,
    TREE,
    WORK,
    _frozen_makes_no_progress,
    cg,
    probe_devices,
    read,
    sleeper,
    spawn,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="cgroup tests need root")

# Per driver kind: the controller holding I/O weights and the files that can carry one.
IO_WEIGHT_FILES = {"v1": ("blkio", ("blkio.weight", "blkio.bfq.weight")), "v2": (None, ("io.weight", "io.bfq.weight"))}
PIDS_FILE = {"v1": ("pids", "pids.max"), "v2": (None, "pids.max")}
# Where a systemd inside makes its sub-cgroups: the hierarchy without controllers (v1) or the one tree (v2).
SYSTEMD = {"v1": "name=systemd", "v2": None}
# Sub-cgroups a destroy must remove with the container's own.
NESTED = {
    "v1": (("name=systemd", "system.slice/a.service"), (None, "init.scope")),
    "v2": ((None, "system.slice/a.service"),),
}


@pytest.fixture(params=["v1", "v2"])
def driver(request):
    """Each cgroup driver in turn (skipped by name where the host has no such hierarchy)."""
    return request.param, request.getfixturevalue(request.param)


def _need(kind, d, ctid: str, controller: str) -> None:
    """Skip by name where the host gives this driver no such controller."""
    if kind == "v1":
        if controller not in d.mounts.v1:
            pytest.skip(f"host has no cgroup v1 '{controller}' hierarchy")
    elif controller not in read(cg(d, None, ctid, "cgroup.controllers")).split():
        pytest.skip(f"cgroup2 mount {MOUNTS.unified} lacks the '{controller}' controller")


def test_create_attach_procs(driver, children):
    kind, d = driver
    d.create("ct")
    assert d.exists("ct") and d.list() == ["ct"]
    proc = sleeper(children)
    d.attach("ct", proc.pid)
    assert d.procs("ct") == [proc.pid]
    # a systemd inside makes sub-cgroups: procs() still finds the pid there
    sub = cg(d, SYSTEMD[kind], "ct", "init.scope")
    os.mkdir(sub)
    with open(os.path.join(sub, "cgroup.procs"), "w") as fh:
        fh.write(str(proc.pid))
    assert d.procs("ct") == [proc.pid]
    with pytest.raises(InvalidState):
        d.create("ct")
    with pytest.raises(NotFound):
        d.attach("nope", proc.pid)
    with pytest.raises(ValidationError):
        d.create("../x")


def test_stats_after_work(driver, children):
    kind, d = driver
    d.create("ct")
    memory = kind == "v1" or "memory" in read(cg(d, None, "ct", "cgroup.controllers")).split()
    if memory:
        d.apply("ct", Limits(memory_mb=512))
    proc = spawn(d, "ct", children, WORK)
    assert proc.stdout.readline().strip() == "ready"
    stats = d.stats("ct")
    assert stats.cpu_ns >= 100_000_000 and stats.pids == 1
    if memory:
        assert stats.memory_bytes >= 32 * MiB
        assert stats.memory_limit_bytes == 512 * MiB


def test_memory_limit_ooms_the_allocator(driver, children):
    kind, d = driver
    d.create("ct")
    _need(kind, d, "ct", "memory")
    d.apply("ct", Limits(memory_mb=64, swap_mb=0))
    proc = spawn(d, "ct", children, "x = b'x' * (200 << 20)\nprint('survived')")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL and "survived" not in out
    if kind == "v1":
        oom = dict(line.split() for line in read(cg(d, "memory", "ct", "memory.oom_control")).splitlines())
        assert int(oom.get("oom_kill", 1)) >= 1


def test_pids_limit_blocks_fork(driver, children):
    kind, d = driver
    d.create("ct")
    _need(kind, d, "ct", "pids")
    d.apply("ct", Limits(pids=1))
    assert spawn(d, "ct", children, FORK).communicate(timeout=20)[0].strip() == "EAGAIN"
    d.apply("ct", Limits(pids=10))
    assert spawn(d, "ct", children, FORK).communicate(timeout=20)[0].strip() == "forked"


def test_freeze_thaw(driver, children):
    kind, d = driver
    d.create("ct")
    if kind == "v2" and not os.path.exists(cg(d, None, "ct", "cgroup.freeze")):
        pytest.skip("kernel lacks cgroup.freeze (Linux < 5.2)")
    proc = spawn(d, "ct", children, SPIN)
    if kind == "v1":
        assert read(cg(d, "freezer", "ct", "freezer.state")) == "THAWED"
    _frozen_makes_no_progress(d, "ct")
    if kind == "v1":
        assert read(cg(d, "freezer", "ct", "freezer.state")) == "THAWED"
    else:
        assert "frozen 0" in read(cg(d, None, "ct", "cgroup.events"))
    assert proc.poll() is None


def test_kill_empties(driver, children):
    kind, d = driver
    d.create("ct")
    proc = spawn(d, "ct", children, TREE)
    assert proc.stdout.readline().strip() == "ready"
    assert len(d.procs("ct")) == 4
    d.kill("ct", timeout=5)
    assert d.procs("ct") == []
    assert proc.wait(timeout=5) == -signal.SIGKILL
    if kind == "v1":
        assert read(cg(d, "freezer", "ct", "freezer.state")) == "THAWED"


def test_destroy(driver, children):
    kind, d = driver
    d.create("ct")
    proc = sleeper(children)
    d.attach("ct", proc.pid)
    with pytest.raises(InvalidState):
        d.destroy("ct")
    for controller, name in NESTED[kind]:
        os.makedirs(cg(d, controller, "ct", name))
    d.kill("ct")
    d.destroy("ct")
    for root in d._roots():
        assert not os.path.exists(os.path.join(root, d.parent, "ct"))
    assert not d.exists("ct") and d.list() == []
    d.destroy("ct")  # idempotent


def test_device_defaults_deny(driver, children, tmp_path):
    _, d = driver
    d.create("ct")
    out = probe_devices(d, "ct", children, tmp_path)
    assert out == {"null": "ok", "kmsg": errno.EPERM, "mknod": "ok", "kmsg_ro": errno.EPERM}


def test_allow_devices_widens_a_live_cgroup(driver, children, tmp_path):
    """A device hot-plugged into a running container: v1 adds a devices.allow line, v2 swaps the program."""
    from engine.cgroups.base import DeviceRule

    _, d = driver
    d.create("ct")
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    d.allow_devices("ct", [DeviceRule("c", 1, 11, "rm")])
    out = probe_devices(d, "ct", children, first)
    assert out == {"null": "ok", "kmsg": errno.EPERM, "mknod": "ok", "kmsg_ro": "ok"}
    d.allow_devices("ct", [DeviceRule("c", 1, 11)])
    out = probe_devices(d, "ct", children, second)
    assert out == {"null": "ok", "kmsg": "ok", "mknod": "ok", "kmsg_ro": "ok"}


def _existing(driver, controller, names) -> list[str]:
    if controller and controller not in driver.mounts.v1:
        return []
    return [path for name in names if os.path.exists(path := cg(driver, controller, "ct", name))]


def test_io_weight_is_applied_or_refused_by_name(driver):
    kind, d = driver
    d.create("ct")
    controller, names = IO_WEIGHT_FILES[kind]
    weights = _existing(d, controller, names)
    pids_controller, pids_name = PIDS_FILE[kind]
    pids = _existing(d, pids_controller, [pids_name])
    if weights:  # BFQ or blk-iocost here: the weight is written (clamped to each file's range) and resets
        d.apply("ct", Limits(ioweight=300))
        assert all(read(path).split()[-1] == "300" for path in weights)
        d.apply("ct", Limits(ioweight=5))
        assert all(int(read(path).split()[-1]) in (5, 10) for path in weights)
        d.apply("ct", Limits())
        return
    # No weight file: refused, naming the setting and what the host lacks; nothing else written.
    before = read(pids[0]) if pids else None
    with pytest.raises(NotSupported) as refused:
        d.apply("ct", Limits(pids=5, ioweight=300) if pids else Limits(ioweight=300))
    message = str(refused.value)
    assert "ioweight" in message, message
    assert any(name in message for name in names) or "'io'" in message, message
    if pids:
        assert read(pids[0]) == before  # refused before any write
    d.apply("ct", Limits())  # resetting what the host lacks is not an error
    if kind == "v1":
        assert "BFQ" in message and "blkio.weight" in message, message
