"""Backups on every storage backend: snapshot mode, raw images, restores over a container, the backup lock."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from engine.backup.dump import backup
from engine.backup.progress import Cancelled
from engine.backup.restore import restore
from engine.errors import InvalidState, NotSupported
from tests.engine.storage_lab import host_mounts, lab, make  # noqa: F401 - fixtures

STORAGE = {"dir": "local", "loop": "local", "btrfs": "local-btrfs", "overlay": "local-overlay"}


def read(lab, ctid, path) -> str:  # noqa: F811
    code, out = lab.sh(ctid, f"cat {path} 2>&1")
    return out.strip() if code == 0 else f"<missing: {out.strip()}>"


def fresh_id(e, make) -> int:  # noqa: F811
    """A free ID the ``make`` fixture destroys after the test."""
    new = max(make.made) + 100
    while e.exists(new):
        new += 1
    make.made.append(new)
    return new


def volume(e, ctid):
    return e.storages.resolve(e.config(ctid).current.values["rootfs"].split(",")[0], ctid)[1:]


def leftovers(lab) -> dict:  # noqa: F811
    """What a backup could leave behind: backup snapshots, overlay layers, btrfs subvolumes, host mounts."""
    images = [
        lab.engine.layout.images,
        lab.btrfs / "store" / "images",
        lab.base / "overlay" / "images",
        lab.btrfs / "dir" / "images",
    ]
    layers = lab.base / "overlay" / "layers"
    subvolumes = subprocess.run(["btrfs", "subvolume", "list", str(lab.btrfs)], capture_output=True, text=True).stdout
    return {
        "snapshots": sorted(str(p) for d in images if d.is_dir() for p in d.glob("*/*@.vzdump")),
        "layers": sorted(os.listdir(layers)) if layers.is_dir() else [],
        "subvolumes": len(subvolumes.splitlines()),
        "mounts": lab_mounts(lab),
    }


def lab_mounts(lab) -> set[str]:  # noqa: F811 - the fixture's value
    """Host mounts at or below this lab's directory (another module's lab may come and go meanwhile)."""
    return {m for m in host_mounts(lab.base) if str(lab.base) in m}


@pytest.mark.parametrize("backend", ["btrfs", "overlay"])
def test_snapshot_mode_archives_one_point_while_the_container_runs(
    lab,  # noqa: F811 - the fixture
    make,  # noqa: F811 - the fixture
    backend,
    tmp_path,
    monkeypatch,
):
    e = lab.engine
    ctid = make(backend)
    lab.sh(ctid, "(i=0; while true; do i=$((i+1)); echo $i >> /root/log; done) >/dev/null 2>&1 &")
    lab.sh(ctid, "sleep 0.2")
    pid = e.status(ctid).pid
    before = leftovers(lab)
    events, seen = [], {}
    real_freeze, real_thaw = e.cgroups.freeze, e.cgroups.thaw
    monkeypatch.setattr(e.cgroups, "freeze", lambda name, **kw: (events.append("freeze"), real_freeze(name, **kw)))
    monkeypatch.setattr(e.cgroups, "thaw", lambda name, **kw: (events.append("thaw"), real_thaw(name, **kw)))
    driver_type = type(volume(e, ctid)[0])
    real_tree = driver_type.backup_snapshot_tree

    def tree(self, vol):
        manager = real_tree(self, vol)
        root = manager.__enter__()
        events.append("tree")
        seen["log"] = (root / "root" / "log").read_text()
        seen["lock"] = e.status(ctid).lock
        lab.sh(ctid, "sleep 0.1")  # the container writes on while the snapshot is read
        seen["live"] = read(lab, ctid, "/root/log")
        return _Entered(manager, root)

    monkeypatch.setattr(driver_type, "backup_snapshot_tree", tree)
    result = backup(e, ctid, dumpdir=tmp_path, mode="snapshot", compress="zstd")
    assert events == ["freeze", "thaw", "tree"]  # frozen only while the snapshot was taken
    assert seen["lock"] == "backup" and e.status(ctid).lock is None
    assert e.status(ctid).pid == pid  # never stopped
    lines = seen["log"].splitlines()
    assert lines == [str(i) for i in range(1, len(lines) + 1)]  # whole lines: a consistent point
    assert len(seen["live"].splitlines()) > len(lines)
    assert leftovers(lab) == before

    new = fresh_id(e, make)
    restored = restore(e, result.archive, new, storage=STORAGE[backend])
    assert restored.ctid == new
    rootfs = e.config(new).current.values["rootfs"]
    assert rootfs.startswith(f"{STORAGE[backend]}:{new}/")
    if backend == "btrfs":
        assert "size=256M" in rootfs  # the archive's size is kept
    e.start(new)
    assert read(lab, new, "/root/log") == seen["log"].strip()  # the snapshot's point, not a later one


class _Entered:
    """A context manager already entered (the test looked inside first)."""

    def __init__(self, manager, root: Path):
        self.manager, self.root = manager, root

    def __enter__(self) -> Path:
        return self.root

    def __exit__(self, *exc):
        return self.manager.__exit__(*exc)


@pytest.mark.parametrize("backend", ["btrfs", "overlay", "loop-on-btrfs"])
def test_a_snapshot_backup_failing_midway_leaves_nothing_behind(lab, make, backend, tmp_path):  # noqa: F811
    e = lab.engine
    ctid = make(*(("loop", {"rootfs": "btrfs-dir:0.0625"}) if backend == "loop-on-btrfs" else (backend,)))
    before = leftovers(lab)
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 30

    with pytest.raises(Cancelled):
        backup(e, ctid, dumpdir=tmp_path, mode="snapshot", cancel=cancel)
    assert list(tmp_path.iterdir()) == []
    assert leftovers(lab) == before
    status = e.status(ctid)
    assert status.status == "running" and status.lock is None and lab.sh(ctid, "echo ok")[1].strip() == "ok"

    # A backup killed after its snapshot: the lock stays and says so; unlock removes the snapshot too.
    driver, vol = volume(e, ctid)
    with e.hold(ctid, "backup") as held:
        driver.take_backup_snapshot(vol, None)
        config = e.config(ctid)
        assert held.running and config.current.values["lock"] == "backup"
        e.layout.config_path(ctid).write_text(config.render())  # what a killed process leaves
        saved = config.render()
    e.layout.config_path(ctid).write_text(saved)
    assert e.status(ctid).lock == "backup" and leftovers(lab) != before
    with pytest.raises(InvalidState, match=r"locked \(backup\)"):
        e.snapshot(ctid, "blocked")
    e.unlock(ctid)
    assert e.status(ctid).lock is None and leftovers(lab) == before


def test_raw_images_back_up_in_every_mode(lab, make, tmp_path):  # noqa: F811
    e = lab.engine
    ctid = make("loop")
    lab.sh(ctid, "echo image > /root/a; sync")
    before = leftovers(lab)
    pid = e.status(ctid).pid
    suspended = backup(e, ctid, dumpdir=tmp_path, mode="suspend")
    assert e.status(ctid).pid == pid and lab.sh(ctid, "echo ok")[1].strip() == "ok"
    stopped = backup(e, ctid, dumpdir=tmp_path, mode="stop")
    assert e.status(ctid).status == "running" and e.status(ctid).pid != pid
    with pytest.raises(NotSupported, match="cannot clone files.*--mode suspend"):  # ext4 under the lab's local
        backup(e, ctid, dumpdir=tmp_path, mode="snapshot")
    cloned = make("loop", {"rootfs": "btrfs-dir:0.0625"})
    lab.sh(cloned, "echo on-btrfs > /root/a; sync")
    snapshot = backup(e, cloned, dumpdir=tmp_path, mode="snapshot")
    assert leftovers(lab)["snapshots"] == [] and lab_mounts(lab) == before["mounts"]
    for archive, text in ((suspended.archive, "image"), (stopped.archive, "image"), (snapshot.archive, "on-btrfs")):
        new = fresh_id(e, make)
        restore(e, archive, new)
        assert e.config(new).current.values["rootfs"].startswith(f"local:{new}/vm-{new}-disk-0.raw,size=")
        e.start(new)
        assert read(lab, new, "/root/a") == text
        e.destroy(new, force=True)
    assert lab_mounts(lab) == before["mounts"]


@pytest.mark.parametrize("backend", ["loop", "btrfs", "overlay"])
def test_restore_over_a_container_on_each_backend(lab, make, backend, tmp_path):  # noqa: F811
    e = lab.engine
    ctid = make(backend)
    lab.sh(ctid, "echo old > /root/marker")
    archive = backup(e, ctid, dumpdir=tmp_path, mode="stop").archive
    lab.sh(ctid, "echo changed > /root/marker")
    with pytest.raises(InvalidState, match="running"):
        restore(e, archive, ctid, force=True)
    e.stop(ctid)
    old_vol = volume(e, ctid)[1]
    result = restore(e, archive, ctid, force=True, storage=STORAGE[backend], options={"hostname": "renewed"})
    assert result.replaced and e.config(ctid).hostname == "renewed"
    driver, vol = volume(e, ctid)
    assert vol != old_vol and not os.path.lexists(driver.path(old_vol))  # built beside, the old one removed
    assert sorted(os.listdir(driver.path(vol).parent)) == sorted(
        {driver.path(vol).name, driver.rootfs(vol).name} - {"root"}
    )
    e.start(ctid)
    assert read(lab, ctid, "/root/marker") == "old"
