"""A dir storage with ``layout overlay``: new containers get overlay volumes, so a stopped container's snapshot
and linked clone write no data whatever its size (measured as the blocks the storage gains, not by timing),
where a plain dir storage copies everything; volumes made before the layout changed keep working."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from engine.errors import ValidationError
from engine.storage import cfg
from engine.storage.base import StorageDef

MIB = 1 << 20


def used(path: Path) -> int:
    """Bytes of disk the tree uses (allocated blocks, directories and records included; hard links once)."""
    seen, total = set(), 0
    for top, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            st = os.lstat(os.path.join(top, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


@pytest.fixture(scope="module")
def node(tmp_path_factory, cgroup_parent):
    from engine.lifecycle import Engine

    base = tmp_path_factory.mktemp("layout")
    os.chmod(base, 0o711)
    root = base / "state"
    engine = Engine(root=root, run_dir=base / "run", cgroup_parent=cgroup_parent, reaper=True)
    storages = {
        "local": StorageDef("local", "dir", root, frozenset({"rootdir", "vztmpl"})),
        "plain": StorageDef("plain", "dir", base / "plain", frozenset({"rootdir"})),
        "layered": StorageDef(
            "layered", "dir", base / "layered", frozenset({"rootdir"}), options={"layout": "overlay"}
        ),
    }
    cfg.save(root, storages)
    yield engine, base, storages
    for ctid in reversed(engine.ids()):  # linked clones before their sources
        engine.destroy(ctid, force=True)
    shutil.rmtree(base, ignore_errors=True)


def test_the_layout_option_is_checked():
    with pytest.raises(ValidationError, match="'layout' is for dir storages"):
        cfg.parse("dir: x\n\tpath /x\n\tlayout layered\n")
    with pytest.raises(ValidationError, match="'layout' is for dir storages"):
        cfg.parse("btrfs: x\n\tpath /x\n\tlayout overlay\n")
    assert cfg.parse("dir: x\n\tpath /x\n\tlayout overlay\n")["x"].options == {"layout": "overlay"}


@pytest.mark.parametrize("added_mib", [0, 64])
def test_snapshot_and_linked_clone_on_the_overlay_layout_write_no_data(node, busybox_template, added_mib):
    engine, base, _ = node
    ctid = 7100 + added_mib
    engine.create(ctid, busybox_template, {"hostname": "layered", "storage": "layered"})
    assert engine.config(ctid).get("rootfs")["volume"].endswith(".overlay")
    if added_mib:  # written from inside, into the container's own (upper) layer
        engine.start(ctid)
        code, _, err = engine.exec_output(ctid, ["dd", "if=/dev/urandom", "of=/big", "bs=1M", f"count={added_mib}"])
        assert code == 0, err
        engine.stop(ctid)
    before = used(base / "layered")
    engine.snapshot(ctid, "s1")
    after_snapshot = used(base / "layered")
    engine.clone(ctid, ctid + 1, snapshot="s1")
    after_clone = used(base / "layered")
    # A few directories and one-line records: the same whatever the container holds.
    assert after_snapshot - before < 100 * 1024, (before, after_snapshot)
    assert after_clone - after_snapshot < 100 * 1024, (after_snapshot, after_clone)
    engine.start(ctid + 1)
    code, out, _ = engine.exec_output(ctid + 1, ["/bin/sh", "-c", "ls -l /big 2>/dev/null | wc -l"])
    assert code == 0 and out.strip() == (b"1" if added_mib else b"0")
    engine.stop(ctid + 1)


def test_a_plain_dir_storage_copies_the_whole_volume(node, busybox_template):
    engine, base, _ = node
    engine.create(7200, busybox_template, {"hostname": "plain", "storage": "plain"})
    with open(engine._rootfs(engine.config(7200)) / "big", "wb") as handle:
        handle.write(os.urandom(16 * MIB))
    before = used(base / "plain")
    engine.snapshot(7200, "s1")
    assert used(base / "plain") - before > 16 * MIB  # the measurement sees a copy when there is one


def test_volumes_made_before_the_layout_changed_keep_working(node, busybox_template):
    engine, base, storages = node
    engine.create(7300, busybox_template, {"hostname": "older", "storage": "plain"})
    cfg.save(
        engine.layout.root,
        {
            **storages,
            "plain": StorageDef("plain", "dir", base / "plain", frozenset({"rootdir"}), options={"layout": "overlay"}),
        },
    )
    try:
        engine.create(7301, busybox_template, {"hostname": "newer", "storage": "plain"})
        assert engine.config(7301).get("rootfs")["volume"].endswith(".overlay")
        assert engine.config(7300).get("rootfs")["volume"].endswith(".subvol")
        engine.snapshot(7300, "still")
        assert [s.name for s in engine.list_snapshots(7300)] == ["still", "current"]
        assert engine.start(7300).status == "running"
        engine.stop(7300)
    finally:
        cfg.save(engine.layout.root, storages)
