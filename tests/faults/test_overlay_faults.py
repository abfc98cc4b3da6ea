"""An overlay volume's snapshot and rollback killed (SIGKILL) between their renames and their records.

A stopped container's snapshot moves its upper layer into ``layers/`` before the
records naming it are written, and a rollback parks the upper layer before the
empty one is in place: a kill there once left the container's data in a layer
nothing referred to (then deleted by the collector) or a volume without an upper
layer.  Each case writes data, kills the real command at one of the driver's
steps, runs recovery as the agent does, and checks the data is there (with the
snapshot, or without it), no layer is left unreferenced and the container starts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.kit import assert_whole, run_killed
from tests.faults.test_engine_faults import _recover, mounts_unchanged  # noqa: F401 - fixture

pytestmark = pytest.mark.slow

SNAPSHOT_STEPS = ["intent", "moved", "swapped", "recorded"]
ROLLBACK_STEPS = ["intent", "parked", "swapped", "recorded"]


def _volume(lab, ctid: int) -> tuple[object, Path]:
    _, driver, vol = lab.engine.node.rootfs_volume(lab.engine.config(ctid))
    return driver, driver.path(vol)


def _with_data(lab, make) -> int:
    """A stopped overlay container whose upper layer holds a file of its own."""
    ctid = make("overlay")
    assert lab.sh(ctid, f"echo data-{ctid} > /root/data && sync")[0] == 0
    lab.engine.stop(ctid)
    return ctid


def _read(lab, ctid: int, name: str) -> str | None:
    lab.engine.start(ctid)
    try:
        code, out = lab.sh(ctid, f"cat /root/{name}")
        return out.strip() if code == 0 else None
    finally:
        lab.engine.stop(ctid)


def _assert_layers_referenced(driver, path: Path) -> None:
    """Every snapshot layer on the storage named by a volume or a snapshot record; nothing half done left."""
    used = set()
    for record in [*driver.images.glob("*/*.overlay/lower"), *driver.images.glob("*/*.overlay@*")]:
        used.update(driver._read_layers(record))
    layers = {p.name for p in driver.layers.iterdir() if p.name.startswith("s")}
    assert layers <= used, f"unreferenced layers left: {layers - used}"
    assert [layer for layer in used if not (driver.layers / layer).is_dir()] == [], "a record names a missing layer"
    for name in (".pending", ".upper.new", ".upper.old"):
        assert not (path / name).exists(), f"{path / name} left"
    assert (path / "upper").is_dir()


@pytest.mark.parametrize("step", SNAPSHOT_STEPS)
def test_stopped_snapshot_killed(lab, make, step, mounts_unchanged):  # noqa: F811
    ctid = _with_data(lab, make)
    driver, path = _volume(lab, ctid)
    run_killed(lab, "engine", ["snapshot", ctid, "half"], f"overlay-snapshot:{step}")
    assert (path / ".pending").is_file()
    actions = _recover(lab)
    assert any(
        a.ctid == ctid and a.detail.startswith("storage ") and "interrupted snapshot" in a.detail for a in actions
    )
    config = lab.engine.config(ctid)
    # The snapshot lock was never cleared, so recovery drops the unfinished snapshot: its data stays current.
    assert "half" not in config.snapshots
    assert not driver.has_snapshot(str(path.relative_to(driver.images)), "half")
    _assert_layers_referenced(driver, path)
    assert_whole(lab, ctid, running=False)
    assert _read(lab, ctid, "data") == f"data-{ctid}"
    lab.engine.snapshot(ctid, "again")  # and the volume takes a snapshot as before
    assert _read(lab, ctid, "data") == f"data-{ctid}"


def test_collector_keeps_a_killed_snapshot_layer(lab, make, mounts_unchanged):  # noqa: F811
    """The data loss itself: the layer collector run before any recovery must not delete the moved layer."""
    ctid = _with_data(lab, make)
    driver, path = _volume(lab, ctid)
    run_killed(lab, "engine", ["snapshot", ctid, "half"], "overlay-snapshot:swapped")
    assert driver.gc() == []
    assert not (path / ".pending").exists()  # repaired under the collector's lock
    _assert_layers_referenced(driver, path)
    _recover(lab)
    assert _read(lab, ctid, "data") == f"data-{ctid}"


@pytest.mark.parametrize("step", ROLLBACK_STEPS)
def test_stopped_rollback_killed(lab, make, step, mounts_unchanged):  # noqa: F811
    ctid = _with_data(lab, make)
    lab.engine.snapshot(ctid, "before")
    lab.engine.start(ctid)
    assert lab.sh(ctid, "echo later > /root/later && echo changed > /root/data && sync")[0] == 0
    lab.engine.stop(ctid)
    driver, path = _volume(lab, ctid)
    run_killed(lab, "engine", ["rollback", ctid, "before"], f"overlay-rollback:{step}")
    actions = _recover(lab)
    assert any(
        a.ctid == ctid and a.detail.startswith("storage ") and "interrupted rollback" in a.detail for a in actions
    )
    assert "before" in lab.engine.config(ctid).snapshots
    _assert_layers_referenced(driver, path)
    assert_whole(lab, ctid, running=False)
    # Recovery finishes the rollback the engine recorded: the snapshot's data, without the later changes.
    assert _read(lab, ctid, "data") == f"data-{ctid}"
    assert _read(lab, ctid, "later") is None
    lab.engine.rollback(ctid, "before")  # the volume rolls back as before
    assert _read(lab, ctid, "data") == f"data-{ctid}"
