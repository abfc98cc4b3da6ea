"""One contract, run against every cgroup driver this host can run (v1 hierarchies, the cgroup2 mount).

What a driver promises does not depend on its kind: a limit the host can apply reads back,
and a limit the host cannot apply is refused with NotSupported naming the setting and what
the host lacks, before anything is written. Hosts differ (BFQ or not, controllers on the
cgroup2 mount or not): each test asserts whichever of the two this host must give.
"""

import os

import pytest

from engine.cgroups import Limits
from engine.errors import NotSupported
from tests.engine.cgroup_support import cg, read

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="cgroup tests need root")

# Per driver kind: the controller holding I/O weights and the files that can carry one.
IO_WEIGHT_FILES = {"v1": ("blkio", ("blkio.weight", "blkio.bfq.weight")),
                   "v2": (None, ("io.weight", "io.bfq.weight"))}
PIDS_FILE = {"v1": ("pids", "pids.max"), "v2": (None, "pids.max")}


@pytest.fixture(params=["v1", "v2"])
def driver(request):
    """Each cgroup driver in turn (skipped by name where the host has no such hierarchy)."""
    return request.param, request.getfixturevalue(request.param)


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
