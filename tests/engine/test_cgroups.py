"""Tests of engine.cgroups against the real kernel (run as root).

The v1 driver is exercised on the host's v1 hierarchies; the v2 driver on the
host's cgroup2 mount (on a hybrid host that is /sys/fs/cgroup/unified, which
has few or no controllers: limit tests for a missing controller are skipped
with its name). Every test uses a parent cgroup unique to this run and the
fixtures remove it.
"""

import os

import pytest

from engine.cgroups import (
    CGROUP2_SUPER_MAGIC,
    DRIVERS,
    CgroupMounts,
    DeviceRule,
    Limits,
    V1Driver,
    V2Driver,
    detect,
    detect_kind,
    fs_magic,
    read_mounts,
)
from engine.cgroups.base import procs_tree
from engine.errors import HostError, ValidationError
from tests.engine.cgroup_support import (
    HAS_V1,
    HYBRID,
    MOUNTS,
    _mountinfo,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="cgroup tests need root")


def test_read_mounts_hybrid_and_pure(tmp_path):
    hybrid = read_mounts(_mountinfo(tmp_path, HYBRID))
    assert hybrid.v1 == {
        "cpu": "/sys/fs/cgroup/cpu,cpuacct",
        "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
        "memory": "/sys/fs/cgroup/memory",
        "name=systemd": "/sys/fs/cgroup/systemd",
    }
    assert hybrid.unified == "/sys/fs/cgroup/unified"
    assert hybrid.v1_roots() == ["/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/systemd"]
    pure = read_mounts(
        _mountinfo(
            tmp_path,
            [
                "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot",
                "60 25 0:26 / /my\\040cg rw - cgroup2 cgroup2 rw",
            ],
        )
    )
    assert pure.v1 == {} and pure.unified == "/sys/fs/cgroup"
    odd = read_mounts(_mountinfo(tmp_path, ["60 25 0:26 / /my\\040cg rw - cgroup2 cgroup2 rw"]))
    assert odd.unified == "/my cg"
    nested = read_mounts(
        _mountinfo(
            tmp_path,
            [  # only binds of sub-cgroups: still usable
                "70 25 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory",
                "71 25 0:26 /docker/abc /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw",
            ],
        )
    )
    assert nested.v1 == {"memory": "/sys/fs/cgroup/memory"} and nested.unified == "/sys/fs/cgroup/unified"


def test_detect_kind_layouts(tmp_path):
    hybrid = read_mounts(_mountinfo(tmp_path, HYBRID))
    assert detect_kind(hybrid, root_magic=0x01021994) == "v1"  # tmpfs at /sys/fs/cgroup
    assert detect_kind(CgroupMounts(v1={"memory": "/x"}), None) == "v1"  # pure v1
    assert detect_kind(CgroupMounts(unified="/sys/fs/cgroup"), CGROUP2_SUPER_MAGIC) == "v2"
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    v2_elsewhere = CgroupMounts(v1={"net_cls": "/net_cls"}, unified=str(tmp_path))
    assert detect_kind(v2_elsewhere, None) == "v2"  # controllers live in cgroup2 despite a stray v1 mount
    with pytest.raises(HostError):
        detect_kind(CgroupMounts(), None)


def test_detect_on_this_host(parent):
    driver = detect(parent)
    assert DRIVERS[driver.name] is type(driver)
    if fs_magic("/sys/fs/cgroup") == CGROUP2_SUPER_MAGIC:
        assert isinstance(driver, V2Driver)
        assert driver.ns_path("ct") == os.path.join(MOUNTS.unified, parent, "ct")
    elif HAS_V1 and MOUNTS.unified:  # hybrid, as on the development VM
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


def test_procs_tree_ignores_missing(tmp_path):
    assert procs_tree(str(tmp_path / "absent")) == set()
