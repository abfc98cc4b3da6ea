"""Tests of engine.cgroups against the real kernel (run as root).

The v1 driver is exercised on the host's v1 hierarchies; the v2 driver on the
host's cgroup2 mount (on a hybrid host that is /sys/fs/cgroup/unified, which
has few or no controllers: limit tests for a missing controller are skipped
with its name). Every test uses a parent cgroup unique to this run and the
fixtures remove it.
"""
from __future__ import annotations

import errno
import itertools
import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from engine.cgroups import (
    CGROUP2_SUPER_MAGIC,
    DEFAULT_DEVICES,
    DRIVERS,
    FUSE_DEVICE,
    CgroupMounts,
    DeviceRule,
    Limits,
    V1Driver,
    V2Driver,
    detect,
    detect_kind,
    devices_bpf,
    fs_magic,
    read_mounts,
)
from engine.cgroups.base import MiB, procs_tree, rmdir_tree, wait_until
from engine.errors import HostError, InvalidState, NotFound, NotSupported, ValidationError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="cgroup tests need root")

MOUNTS = read_mounts()
HAS_V1 = "memory" in MOUNTS.v1 and "cpu" in MOUNTS.v1
_seq = itertools.count()
SPIN = "import time\nwhile True: pass"


def _cleanup(driver) -> None:
    for ctid in driver.list():
        try:
            driver.kill(ctid, timeout=5)
        except Exception:
            pass
    for root in driver._roots():
        rmdir_tree(os.path.join(root, driver.parent))


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


def spawn(driver, ctid: str, children: list, code: str | None = None, argv: list[str] | None = None):
    """Start a child that writes itself into the container's cgroups before exec (like the engine's exec)."""
    files = driver.procs_file(ctid)

    def join() -> None:
        for path in files:
            fd = os.open(path, os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)

    argv = argv or [sys.executable, "-S", "-c", code]
    proc = subprocess.Popen(argv, preexec_fn=join, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children.append(proc)
    return proc


def sleeper(children: list) -> subprocess.Popen:
    proc = subprocess.Popen(["sleep", "100"])
    children.append(proc)
    return proc


def read(path: str) -> str:
    with open(path) as fh:
        return fh.read().strip()


def cg(driver, controller: str | None, ctid: str, name: str = "") -> str:
    root = driver.mounts.v1[controller] if controller else driver.mounts.unified
    path = os.path.join(root, driver.parent, ctid)
    return os.path.join(path, name) if name else path


DEVICE_PROBE = """
import json, os, stat, sys
d = sys.argv[1]
out = {}
for name in ("null", "kmsg"):
    try:
        os.close(os.open(os.path.join(d, name), os.O_RDWR)); out[name] = "ok"
    except OSError as e:
        out[name] = e.errno
try:
    os.mknod(os.path.join(d, "kmsg2"), 0o600 | stat.S_IFCHR, os.makedev(1, 11)); out["mknod"] = "ok"
except OSError as e:
    out["mknod"] = e.errno
try:
    os.close(os.open(os.path.join(d, "kmsg"), os.O_RDONLY)); out["kmsg_ro"] = "ok"
except OSError as e:
    out["kmsg_ro"] = e.errno
print(json.dumps(out))
"""


def probe_devices(driver, ctid, children, tmp_path) -> dict:
    os.mknod(tmp_path / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    # a node of an existing device that is not on the list (1:11 is /dev/kmsg, like /dev/mem a
    # host-sensitive device): EPERM can only come from the cgroup, not from a missing driver
    os.mknod(tmp_path / "kmsg", 0o600 | stat.S_IFCHR, os.makedev(1, 11))
    proc = spawn(driver, ctid, children, argv=[sys.executable, "-S", "-c", DEVICE_PROBE, str(tmp_path)])
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return json.loads(out)


# -- detection ------------------------------------------------------------------

def _mountinfo(tmp_path, lines: list[str]) -> str:
    path = tmp_path / "mountinfo"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


HYBRID = [
    "25 30 0:23 / /sys rw,nosuid - sysfs sysfs rw",
    "31 25 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755",
    "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct",
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory",
    "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd",
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate",
    "50 31 0:32 /lxc/x /mnt/sub rw,relatime - cgroup cgroup rw,memory",
]


def test_read_mounts_hybrid_and_pure(tmp_path):
    hybrid = read_mounts(_mountinfo(tmp_path, HYBRID))
    assert hybrid.v1 == {"cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
                         "memory": "/sys/fs/cgroup/memory", "name=systemd": "/sys/fs/cgroup/systemd"}
    assert hybrid.unified == "/sys/fs/cgroup/unified"
    assert hybrid.v1_roots() == ["/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/systemd"]
    pure = read_mounts(_mountinfo(tmp_path, [
        "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot",
        "60 25 0:26 / /my\\040cg rw - cgroup2 cgroup2 rw"]))
    assert pure.v1 == {} and pure.unified == "/sys/fs/cgroup"
    odd = read_mounts(_mountinfo(tmp_path, ["60 25 0:26 / /my\\040cg rw - cgroup2 cgroup2 rw"]))
    assert odd.unified == "/my cg"
    nested = read_mounts(_mountinfo(tmp_path, [   # only binds of sub-cgroups: still usable
        "70 25 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory",
        "71 25 0:26 /docker/abc /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw"]))
    assert nested.v1 == {"memory": "/sys/fs/cgroup/memory"} and nested.unified == "/sys/fs/cgroup/unified"


def test_detect_kind_layouts(tmp_path):
    hybrid = read_mounts(_mountinfo(tmp_path, HYBRID))
    assert detect_kind(hybrid, root_magic=0x01021994) == "v1"          # tmpfs at /sys/fs/cgroup
    assert detect_kind(CgroupMounts(v1={"memory": "/x"}), None) == "v1"  # pure v1
    assert detect_kind(CgroupMounts(unified="/sys/fs/cgroup"), CGROUP2_SUPER_MAGIC) == "v2"
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    v2_elsewhere = CgroupMounts(v1={"net_cls": "/net_cls"}, unified=str(tmp_path))
    assert detect_kind(v2_elsewhere, None) == "v2"   # controllers live in cgroup2 despite a stray v1 mount
    with pytest.raises(HostError):
        detect_kind(CgroupMounts(), None)


def test_detect_on_this_host(parent):
    driver = detect(parent)
    assert DRIVERS[driver.name] is type(driver)
    if fs_magic("/sys/fs/cgroup") == CGROUP2_SUPER_MAGIC:
        assert isinstance(driver, V2Driver)
        assert driver.ns_path("ct") == os.path.join(MOUNTS.unified, parent, "ct")
    elif HAS_V1 and MOUNTS.unified:   # hybrid, as on the development VM
        assert isinstance(driver, V1Driver)
        assert driver.ns_path("ct") == os.path.join(MOUNTS.unified, parent, "ct")
        assert driver.ns_path("ct").startswith(MOUNTS.unified + "/")
    else:
        assert isinstance(driver, V1Driver) and driver.ns_path("ct") is None


def test_limits_validation():
    with pytest.raises(ValidationError):
        Limits(swap_mb=128)
    with pytest.raises(ValidationError):
        Limits(cpus="0-1;rm")
    with pytest.raises(ValidationError):
        Limits(memory_mb=-1)
    with pytest.raises(ValidationError):
        Limits(cpulimit=-0.5)
    with pytest.raises(ValidationError):
        V1Driver("../etc", mounts=CgroupMounts())
    assert DeviceRule("c", 136, None).v1_line() == "c 136:* rwm"


# -- v1 ---------------------------------------------------------------------------

def test_v1_create_attach_procs(v1, children):
    v1.create("ct1")
    for root in v1._roots():
        assert os.path.isdir(os.path.join(root, v1.parent, "ct1"))
    assert v1.exists("ct1") and v1.list() == ["ct1"]
    assert read(cg(v1, "cpuset", "ct1", "cpuset.cpus")) == read(os.path.join(MOUNTS.v1["cpuset"], "cpuset.cpus"))
    assert read(cg(v1, "cpuset", "ct1", "cpuset.mems"))
    proc = sleeper(children)
    v1.attach("ct1", proc.pid)
    assert v1.procs("ct1") == [proc.pid]
    lines = read(f"/proc/{proc.pid}/cgroup").splitlines()
    assert all(line.endswith(f"/{v1.parent}/ct1") for line in lines), lines
    assert len(v1.procs_file("ct1")) == len(v1._roots())
    # a systemd inside makes sub-cgroups: procs() still finds the pid there
    sub = cg(v1, "name=systemd", "ct1", "init.scope")
    os.mkdir(sub)
    with open(os.path.join(sub, "cgroup.procs"), "w") as fh:
        fh.write(str(proc.pid))
    assert v1.procs("ct1") == [proc.pid]
    with pytest.raises(InvalidState):
        v1.create("ct1")
    with pytest.raises(NotFound):
        v1.attach("nope", proc.pid)
    with pytest.raises(ValidationError):
        v1.create("../x")


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
    v1.apply("ct", Limits(memory_mb=128, swap_mb=64, cpus="0", cpulimit=0.5, cpuunits=512, pids=50, ioweight=300))
    assert int(read(cg(v1, "memory", "ct", "memory.limit_in_bytes"))) == 128 * MiB
    memsw = cg(v1, "memory", "ct", "memory.memsw.limit_in_bytes")
    if os.path.exists(memsw):
        assert int(read(memsw)) == 192 * MiB
    assert read(cg(v1, "cpuset", "ct", "cpuset.cpus")) == "0"
    assert read(cg(v1, "cpu", "ct", "cpu.cfs_quota_us")) == "50000"
    assert read(cg(v1, "cpu", "ct", "cpu.cfs_period_us")) == "100000"
    assert read(cg(v1, "cpu", "ct", "cpu.shares")) == "512"
    assert read(cg(v1, "pids", "ct", "pids.max")) == "50"
    weights = [f for f in ("blkio.weight", "blkio.bfq.weight") if os.path.exists(cg(v1, "blkio", "ct", f))]
    for name in weights:
        assert read(cg(v1, "blkio", "ct", name)).split()[-1] == "300"
    # live change: raise memory above the old memsw, lower swap, clamp out-of-range values
    v1.apply("ct", Limits(memory_mb=256, swap_mb=0, cpulimit=2, cpuunits=1, pids=7, ioweight=5))
    assert int(read(cg(v1, "memory", "ct", "memory.limit_in_bytes"))) == 256 * MiB
    if os.path.exists(memsw):
        assert int(read(memsw)) == 256 * MiB
    assert read(cg(v1, "cpu", "ct", "cpu.cfs_quota_us")) == "200000"
    assert read(cg(v1, "cpu", "ct", "cpu.shares")) == "2"
    assert read(cg(v1, "pids", "ct", "pids.max")) == "7"
    for name in weights:
        assert read(cg(v1, "blkio", "ct", name)).split()[-1] == "10"
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
    lacking = V1Driver(v1.parent, mounts=CgroupMounts(
        v1={k: p for k, p in MOUNTS.v1.items() if k != "pids"}, unified=MOUNTS.unified))
    with pytest.raises(NotSupported, match="'pids'"):
        lacking.apply("ct", Limits(pids=5))
    lacking.apply("ct", Limits(memory_mb=64))   # fields the host has still work; pids None is skipped
    assert read(cg(v1, "pids", "ct", "pids.max")) == "max"


def test_v1_memory_limit_ooms_the_allocator(v1, children):
    v1.create("ct")
    v1.apply("ct", Limits(memory_mb=64, swap_mb=0))
    proc = spawn(v1, "ct", children, "x = b'x' * (200 << 20)\nprint('survived')")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL and "survived" not in out
    oom = dict(line.split() for line in read(cg(v1, "memory", "ct", "memory.oom_control")).splitlines())
    assert int(oom.get("oom_kill", 1)) >= 1


FORK = """
import errno, os
try:
    pid = os.fork()
except OSError as e:
    print(errno.errorcode[e.errno])
else:
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    print("forked")
"""


def test_v1_pids_limit_blocks_fork(v1, children):
    v1.create("ct")
    v1.apply("ct", Limits(pids=1))
    assert spawn(v1, "ct", children, FORK).communicate(timeout=20)[0].strip() == "EAGAIN"
    v1.apply("ct", Limits(pids=10))
    assert spawn(v1, "ct", children, FORK).communicate(timeout=20)[0].strip() == "forked"


WORK = """
import time
t = time.process_time()
while time.process_time() - t < 0.2:
    pass
buf = b'x' * (32 << 20)
print('ready', flush=True)
time.sleep(100)
"""


def test_v1_stats_after_work(v1, children):
    v1.create("ct")
    v1.apply("ct", Limits(memory_mb=512))
    proc = spawn(v1, "ct", children, WORK)
    assert proc.stdout.readline().strip() == "ready"
    stats = v1.stats("ct")
    assert stats.cpu_ns >= 100_000_000
    assert stats.memory_bytes >= 32 * MiB
    assert stats.memory_limit_bytes == 512 * MiB
    assert stats.pids == 1


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
    script = (f"dd if=/dev/zero of={data} bs=1M count=4 oflag=direct status=none && "
              f"dd if={data} of=/dev/null bs=1M iflag=direct status=none")
    proc = spawn(v1, "ct", children, argv=["sh", "-c", script])
    _, err = proc.communicate(timeout=30)
    if proc.returncode != 0 and "Invalid argument" in err:
        pytest.skip(f"filesystem under {tmp_path} does not support O_DIRECT")
    assert proc.returncode == 0, err
    stats = v1.stats("ct")
    assert stats.io_write_bytes >= 4 * MiB and stats.io_read_bytes >= 4 * MiB


def _frozen_makes_no_progress(driver, ctid: str) -> None:
    assert wait_until(lambda: driver.stats(ctid).cpu_ns > 50_000_000, 5)   # the spinner runs
    driver.freeze(ctid)
    before = driver.stats(ctid).cpu_ns
    time.sleep(0.3)
    assert driver.stats(ctid).cpu_ns == before
    driver.thaw(ctid)
    assert wait_until(lambda: driver.stats(ctid).cpu_ns > before + 50_000_000, 5)


def test_v1_freeze_thaw(v1, children):
    v1.create("ct")
    proc = spawn(v1, "ct", children, SPIN)
    assert read(cg(v1, "freezer", "ct", "freezer.state")) == "THAWED"
    _frozen_makes_no_progress(v1, "ct")
    assert read(cg(v1, "freezer", "ct", "freezer.state")) == "THAWED"
    assert proc.poll() is None


TREE = """
import os, time
for _ in range(3):
    if os.fork() == 0:
        time.sleep(100)
        os._exit(0)
print('ready', flush=True)
time.sleep(100)
"""


def test_v1_kill_empties(v1, children):
    v1.create("ct")
    proc = spawn(v1, "ct", children, TREE)
    assert proc.stdout.readline().strip() == "ready"
    assert len(v1.procs("ct")) == 4
    v1.kill("ct", timeout=5)
    assert v1.procs("ct") == []
    assert proc.wait(timeout=5) == -signal.SIGKILL
    assert read(cg(v1, "freezer", "ct", "freezer.state")) == "THAWED"


def test_v1_destroy(v1, children):
    v1.create("ct")
    proc = sleeper(children)
    v1.attach("ct", proc.pid)
    with pytest.raises(InvalidState):
        v1.destroy("ct")
    for path in (cg(v1, "name=systemd", "ct", "system.slice/a.service"), cg(v1, None, "ct", "init.scope")):
        os.makedirs(path)
    v1.kill("ct")
    v1.destroy("ct")
    for root in v1._roots():
        assert not os.path.exists(os.path.join(root, v1.parent, "ct"))
    assert not v1.exists("ct") and v1.list() == []
    v1.destroy("ct")   # idempotent


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
    assert os.stat(cg(v1, "memory", "ct")).st_uid == 0   # controller dirs stay root's


# -- v2 ---------------------------------------------------------------------------

def test_v2_create_attach_procs(v2, children):
    v2.create("ct")
    assert os.path.isdir(cg(v2, None, "ct")) and v2.exists("ct") and v2.list() == ["ct"]
    assert v2.ns_path("ct") == cg(v2, None, "ct")
    proc = sleeper(children)
    v2.attach("ct", proc.pid)
    assert v2.procs("ct") == [proc.pid]
    assert f"0::/{v2.parent}/ct" in read(f"/proc/{proc.pid}/cgroup").splitlines()
    sub = cg(v2, None, "ct", "init.scope")
    os.mkdir(sub)
    with open(os.path.join(sub, "cgroup.procs"), "w") as fh:
        fh.write(str(proc.pid))
    assert v2.procs("ct") == [proc.pid]
    with pytest.raises(InvalidState):
        v2.create("ct")


def test_v2_cpu_stat_accounting(v2, children):
    v2.create("ct")
    proc = spawn(v2, "ct", children, WORK)
    assert proc.stdout.readline().strip() == "ready"
    stats = v2.stats("ct")
    assert stats.cpu_ns >= 100_000_000 and stats.pids == 1


def test_v2_freeze_thaw(v2, children):
    v2.create("ct")
    if not os.path.exists(cg(v2, None, "ct", "cgroup.freeze")):
        pytest.skip("kernel lacks cgroup.freeze (Linux < 5.2)")
    proc = spawn(v2, "ct", children, SPIN)
    _frozen_makes_no_progress(v2, "ct")
    assert "frozen 0" in read(cg(v2, None, "ct", "cgroup.events"))
    assert proc.poll() is None


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


def test_v2_destroy(v2, children):
    v2.create("ct")
    proc = sleeper(children)
    v2.attach("ct", proc.pid)
    with pytest.raises(InvalidState):
        v2.destroy("ct")
    os.makedirs(cg(v2, None, "ct", "system.slice/a.service"))
    v2.kill("ct")
    v2.destroy("ct")
    assert not os.path.exists(cg(v2, None, "ct")) and v2.list() == []
    v2.destroy("ct")


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
    v2.create("ct", extra_devices=[DeviceRule("c", 1, 11, "r")])   # kmsg read-only: checks the access mask
    assert len(devices_bpf.attached(cg(v2, None, "ct"))) == 1
    out = probe_devices(v2, "ct", children, tmp_path)
    assert out == {"null": "ok", "kmsg": errno.EPERM, "mknod": "ok", "kmsg_ro": "ok"}


def test_v2_device_filter_default_denies(v2, children, tmp_path):
    v2.create("ct")
    out = probe_devices(v2, "ct", children, tmp_path)
    assert out == {"null": "ok", "kmsg": errno.EPERM, "mknod": "ok", "kmsg_ro": errno.EPERM}


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
    ("cpu", Limits(cpulimit=0.5, cpuunits=20000), {"cpu.max": "50000 100000", "cpu.weight": "10000"},
     {"cpu.max": "max 100000", "cpu.weight": "100"}),
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


def test_v2_io_weight(v2):
    v2.create("ct")
    _need_v2(v2, "ct", "io")
    v2.apply("ct", Limits(ioweight=300))
    files = [f for f in ("io.weight", "io.bfq.weight") if os.path.exists(cg(v2, None, "ct", f))]
    assert files and all("300" in read(cg(v2, None, "ct", f)) for f in files)


def test_v2_swap(v2):
    v2.create("ct")
    _need_v2(v2, "ct", "memory")
    if not os.path.exists(cg(v2, None, "ct", "memory.swap.max")):
        pytest.skip("kernel has no memory.swap.max (swap accounting off)")
    v2.apply("ct", Limits(memory_mb=64, swap_mb=32))
    assert read(cg(v2, None, "ct", "memory.swap.max")) == str(32 * MiB)


def test_v2_memory_limit_ooms_the_allocator(v2, children):
    v2.create("ct")
    _need_v2(v2, "ct", "memory")
    v2.apply("ct", Limits(memory_mb=64, swap_mb=0))
    proc = spawn(v2, "ct", children, "x = b'x' * (200 << 20)\nprint('survived')")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL and "survived" not in out


def test_v2_pids_limit_blocks_fork(v2, children):
    v2.create("ct")
    _need_v2(v2, "ct", "pids")
    v2.apply("ct", Limits(pids=1))
    assert spawn(v2, "ct", children, FORK).communicate(timeout=20)[0].strip() == "EAGAIN"


def test_v2_missing_controller_is_not_supported(v2):
    v2.create("ct")
    offered = read(cg(v2, None, "ct", "cgroup.controllers")).split()
    cases = [("memory", Limits(memory_mb=64)), ("pids", Limits(pids=5)), ("cpu", Limits(cpuunits=50)),
             ("cpuset", Limits(cpus="0")), ("io", Limits(ioweight=50))]
    missing = [(c, lim) for c, lim in cases if c not in offered]
    if not missing:
        pytest.skip("every controller is available on this cgroup2 mount")
    for controller, limits in missing:
        with pytest.raises(NotSupported, match=f"'{controller}'"):
            v2.apply("ct", limits)
    v2.apply("ct", Limits())   # resetting absent controllers is not an error


def test_procs_tree_ignores_missing(tmp_path):
    assert procs_tree(str(tmp_path / "absent")) == set()
