"""Tests of the v1 cgroup driver (engine.cgroups.v1) against the real kernel (run as root).

The v1 driver is exercised on the host's v1 hierarchies; the v2 driver on the
host's cgroup2 mount (on a hybrid host that is /sys/fs/cgroup/unified, which
has few or no controllers: limit tests for a missing controller are skipped
with its name). Every test uses a parent cgroup unique to this run and the
fixtures remove it.
"""

import errno
import os

import pytest

from engine.cgroups import (
    DEFAULT_DEVICES,
    FUSE_DEVICE,
    CgroupMounts,
    Limits,
    V1Driver,
)
from engine.cgroups.base import MiB
from engine.errors import HostError, NotSupported, ValidationError
from tests.engine.cgroup_support import (
    MOUNTS,
    cg,
    probe_devices,
    read,
    sleeper,
    spawn,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="cgroup tests need root")


def test_v1_create_layout(v1, children):
    """One directory per hierarchy, cpuset inherited, a procs file per hierarchy (the rest: the contract)."""
    v1.create("ct1")
    for root in v1._roots():
        assert os.path.isdir(os.path.join(root, v1.parent, "ct1"))
    assert read(cg(v1, "cpuset", "ct1", "cpuset.cpus")) == read(os.path.join(MOUNTS.v1["cpuset"], "cpuset.cpus"))
    assert read(cg(v1, "cpuset", "ct1", "cpuset.mems"))
    proc = sleeper(children)
    v1.attach("ct1", proc.pid)
    lines = read(f"/proc/{proc.pid}/cgroup").splitlines()
    assert all(line.endswith(f"/{v1.parent}/ct1") for line in lines), lines
    assert len(v1.procs_file("ct1")) == len(v1._roots())


def test_v1_create_failure_rolls_back(v1, monkeypatch):
    def boom(self, ctid, rules):
        raise HostError("injected")

    monkeypatch.setattr(V1Driver, "_setup_devices", boom)
    with pytest.raises(HostError, match="injected"):
        v1.create("ct2")
    assert not v1.exists("ct2") and v1.list() == []


def test_v1_apply_reads_back_and_changes_live(v1, children):
    v1.create("ct")
    v1.attach("ct", sleeper(children).pid)
    v1.apply("ct", Limits(memory_mb=128, swap_mb=64, cpus="0", cpulimit=0.5, cpuunits=512, pids=50))
    assert int(read(cg(v1, "memory", "ct", "memory.limit_in_bytes"))) == 128 * MiB
    memsw = cg(v1, "memory", "ct", "memory.memsw.limit_in_bytes")
    if os.path.exists(memsw):
        assert int(read(memsw)) == 192 * MiB
    assert read(cg(v1, "cpuset", "ct", "cpuset.cpus")) == "0"
    assert read(cg(v1, "cpu", "ct", "cpu.cfs_quota_us")) == "50000"
    assert read(cg(v1, "cpu", "ct", "cpu.cfs_period_us")) == "100000"
    assert read(cg(v1, "cpu", "ct", "cpu.shares")) == "512"
    assert read(cg(v1, "pids", "ct", "pids.max")) == "50"
    # live change: raise memory above the old memsw, lower swap, clamp out-of-range values
    v1.apply("ct", Limits(memory_mb=256, swap_mb=0, cpulimit=2, cpuunits=1, pids=7))
    assert int(read(cg(v1, "memory", "ct", "memory.limit_in_bytes"))) == 256 * MiB
    if os.path.exists(memsw):
        assert int(read(memsw)) == 256 * MiB
    assert read(cg(v1, "cpu", "ct", "cpu.cfs_quota_us")) == "200000"
    assert read(cg(v1, "cpu", "ct", "cpu.shares")) == "2"
    assert read(cg(v1, "pids", "ct", "pids.max")) == "7"
    # None resets to unlimited / defaults
    v1.apply("ct", Limits())
    assert int(read(cg(v1, "memory", "ct", "memory.limit_in_bytes"))) > 1 << 60
    assert read(cg(v1, "cpuset", "ct", "cpuset.cpus")) == read(os.path.join(MOUNTS.v1["cpuset"], "cpuset.cpus"))
    assert read(cg(v1, "cpu", "ct", "cpu.cfs_quota_us")) == "-1"
    assert read(cg(v1, "cpu", "ct", "cpu.shares")) == "1024"
    assert read(cg(v1, "pids", "ct", "pids.max")) == "max"
    assert v1.stats("ct").memory_limit_bytes is None
    with pytest.raises(ValidationError, match="cpuset.cpus"):
        v1.apply("ct", Limits(cpus="4095"))


def test_v1_missing_controller_is_not_supported(v1):
    v1.create("ct")
    lacking = V1Driver(
        v1.parent, mounts=CgroupMounts(v1={k: p for k, p in MOUNTS.v1.items() if k != "pids"}, unified=MOUNTS.unified)
    )
    with pytest.raises(NotSupported, match="'pids'"):
        lacking.apply("ct", Limits(pids=5))
    lacking.apply("ct", Limits(memory_mb=64))  # fields the host has still work; pids None is skipped
    assert read(cg(v1, "pids", "ct", "pids.max")) == "max"


def _disk_of(path) -> str | None:
    dev = os.stat(path).st_dev
    sysdir = f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}"
    if not os.path.exists(sysdir):
        return None
    if os.path.exists(os.path.join(sysdir, "partition")):
        sysdir = os.path.join(os.path.realpath(sysdir), "..")
    return read(os.path.join(sysdir, "dev"))


def test_v1_stats_io(v1, children, tmp_path):
    v1.create("ct")
    disk = _disk_of(tmp_path)
    if disk is None or "blkio" not in MOUNTS.v1:
        pytest.skip("tmp_path is not on a block device or there is no v1 blkio hierarchy")
    # New kernels count v1 blkio bytes only once a throttle rule is active; set a huge one.
    for name in ("blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device"):
        with open(cg(v1, "blkio", "ct", name), "w") as fh:
            fh.write(f"{disk} {1 << 40}")
    data = tmp_path / "data"
    script = (
        f"dd if=/dev/zero of={data} bs=1M count=4 oflag=direct status=none && "
        f"dd if={data} of=/dev/null bs=1M iflag=direct status=none"
    )
    proc = spawn(v1, "ct", children, argv=["sh", "-c", script])
    _, err = proc.communicate(timeout=30)
    if proc.returncode != 0 and "Invalid argument" in err:
        pytest.skip(f"filesystem under {tmp_path} does not support O_DIRECT")
    assert proc.returncode == 0, err
    stats = v1.stats("ct")
    assert stats.io_write_bytes >= 4 * MiB and stats.io_read_bytes >= 4 * MiB


def test_v1_device_allow_list(v1, children, tmp_path):
    v1.create("ct", extra_devices=[FUSE_DEVICE])
    listed = set(read(cg(v1, "devices", "ct", "devices.list")).splitlines())
    assert listed == {r.v1_line() for r in DEFAULT_DEVICES} | {"c 10:229 rwm"}
    out = probe_devices(v1, "ct", children, tmp_path)
    assert out == {"null": "ok", "kmsg": errno.EPERM, "mknod": "ok", "kmsg_ro": errno.EPERM}


def test_v1_delegation(v1):
    if not MOUNTS.unified and "name=systemd" not in MOUNTS.v1:
        pytest.skip("no cgroup2 view and no name=systemd hierarchy to delegate")
    v1.create("ct", owner_uid=100000, owner_gid=100001)
    owned = []
    if MOUNTS.unified:
        owned += [cg(v1, None, "ct", f) for f in ("", "cgroup.procs", "cgroup.threads", "cgroup.subtree_control")]
    if "name=systemd" in MOUNTS.v1:
        owned += [cg(v1, "name=systemd", "ct", f) for f in ("", "cgroup.procs")]
    for path in owned:
        st = os.stat(path)
        assert (st.st_uid, st.st_gid) == (100000, 100001), path
    assert os.stat(cg(v1, "memory", "ct")).st_uid == 0  # controller dirs stay root's


# -- v2 ---------------------------------------------------------------------------
