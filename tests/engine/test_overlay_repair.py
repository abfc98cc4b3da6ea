"""An overlay volume left half way through a snapshot or rollback is repaired before it is used.

The states are the ones a killed process leaves (``tests/faults/test_overlay_faults.py``
makes them with SIGKILL); here they are laid on disk directly, so the repair done
by a start (activate) and by the layer collector is checked in the fast suite.
"""

from __future__ import annotations

import os

from engine.storage import overlay_repair
from tests.engine.storage_lab import lab, make  # noqa: F401 - fixtures


def _stopped_with_data(lab, make):  # noqa: F811
    ctid = make("overlay")
    code, out = lab.sh(ctid, f"echo data-{ctid} > /root/data && sync")
    assert code == 0, out
    lab.engine.stop(ctid)
    _, driver, vol = lab.engine.node.rootfs_volume(lab.engine.config(ctid))
    return ctid, driver, driver.path(vol)


def _data(lab, ctid: int) -> str:  # noqa: F811
    lab.engine.start(ctid)
    try:
        return lab.sh(ctid, "cat /root/data")[1].strip()
    finally:
        lab.engine.stop(ctid)


def test_a_snapshot_cut_after_its_first_rename_is_undone_at_start(lab, make):  # noqa: F811
    ctid, driver, path = _stopped_with_data(lab, make)
    lower = driver._read_layers(path / "lower")
    layer = "s" + os.urandom(8).hex()
    overlay_repair.write_intent(path, {"op": "snapshot", "snap": "cut", "layer": layer, "lower": lower})
    os.rename(path / "upper", driver.layers / layer)  # the volume has no upper layer now
    assert _data(lab, ctid) == f"data-{ctid}"
    assert not (path / overlay_repair.PENDING).exists()
    assert not (driver.layers / layer).exists()
    assert driver._read_layers(path / "lower") == lower


def test_the_collector_repairs_before_it_removes(lab, make):  # noqa: F811
    """The moved layer is named by no record yet: the collector must put it back, not delete it."""
    ctid, driver, path = _stopped_with_data(lab, make)
    lower = driver._read_layers(path / "lower")
    layer = "s" + os.urandom(8).hex()
    overlay_repair.write_intent(path, {"op": "snapshot", "snap": "cut", "layer": layer, "lower": lower})
    os.rename(path / "upper", driver.layers / layer)
    (path / "upper").mkdir()  # the empty upper in place, the records not written
    assert driver.gc() == []
    assert (path / "upper" / "root" / "data").read_text() == f"data-{ctid}\n"


def test_a_finished_snapshot_whose_intent_stayed_is_kept(lab, make):  # noqa: F811
    ctid, driver, path = _stopped_with_data(lab, make)
    lower = driver._read_layers(path / "lower")
    lab.engine.snapshot(ctid, "done")
    new = driver._read_layers(path / "lower")
    assert new[1:] == lower
    overlay_repair.write_intent(path, {"op": "snapshot", "snap": "done", "layer": new[0], "lower": lower})
    assert [detail for ident, detail in driver.repair() if ident == ctid] == [
        f"{path.name}: an interrupted snapshot 'done' was finished"
    ]
    assert driver._read_layers(path / "lower") == new
    assert driver.has_snapshot(f"{ctid}/{path.name}", "done")
    assert _data(lab, ctid) == f"data-{ctid}"


def test_a_rollback_cut_with_its_upper_parked_is_undone(lab, make):  # noqa: F811
    ctid, driver, path = _stopped_with_data(lab, make)
    lab.engine.snapshot(ctid, "before")
    lab.engine.start(ctid)
    assert lab.sh(ctid, "echo changed > /root/data && sync")[0] == 0
    lab.engine.stop(ctid)
    lower = driver._read_layers(path / "lower")
    snap = driver._read_layers(driver.snapshot_path(f"{ctid}/{path.name}", "before"))
    overlay_repair.write_intent(path, {"op": "rollback", "snap": "before", "layers": snap, "lower": lower})
    os.rename(path / "upper", path / ".upper.old")
    assert _data(lab, ctid) == "changed"  # the rollback never took: the volume as it was
    assert not (path / ".upper.old").exists()
    lab.engine.rollback(ctid, "before")
    assert _data(lab, ctid) == f"data-{ctid}"


def test_an_intent_torn_while_it_was_written_is_dropped(lab, make):  # noqa: F811
    """A record whose flush never returned: nothing had moved, so the volume is as it was."""
    ctid, driver, path = _stopped_with_data(lab, make)
    lower = driver._read_layers(path / "lower")
    (path / ".upper.new").mkdir()
    (path / overlay_repair.PENDING).write_text('{"layer": "s0')
    assert _data(lab, ctid) == f"data-{ctid}"
    assert not (path / overlay_repair.PENDING).exists() and not (path / ".upper.new").exists()
    assert driver._read_layers(path / "lower") == lower
