"""pct's disk verbs on real storages: mount/unmount, df, fstrim, fsck, move-volume, rescan
(engine.hostmount, engine.move_volume, engine.rescan)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import InvalidState, NotSupported, ValidationError
from tests.engine.storage_lab import host_mounts, lab, make  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parents[2]


def test_mount_puts_the_volumes_on_the_host_under_the_mounted_lock(lab, make):  # noqa: F811
    engine = lab.engine
    ctid = make("loop", {"mp0": "local:0.1,mp=/data"}, start=False)
    before = host_mounts(engine.layout.root, engine.layout.run)
    engine.start(ctid)
    with pytest.raises(InvalidState, match="running"):
        engine.mount(ctid)
    lab.sh(ctid, "echo on-the-mp > /data/f; ln -s / /escape")
    engine.stop(ctid)
    path = engine.mount(ctid)
    try:
        assert (path / "bin" / "busybox").is_file() and (path / "data" / "f").read_text() == "on-the-mp\n"
        assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
        assert engine.config(ctid).current.values["lock"] == "mounted"
        with pytest.raises(InvalidState, match="locked \\(mounted\\)"):
            engine.start(ctid)
        rows = {r["mp"]: r for r in engine.df(ctid)}  # uses the repair mount
        assert rows["mp0"]["path"] == "/data" and 90 << 20 < rows["mp0"]["size"] < 110 << 20
    finally:
        engine.unmount(ctid)
    assert not path.exists() and "lock" not in engine.config(ctid).current.values
    assert host_mounts(engine.layout.root, engine.layout.run) == before
    with pytest.raises(InvalidState, match="not mounted"):
        engine.unmount(ctid)


def test_df_of_a_stopped_and_a_running_container(lab, make):  # noqa: F811
    engine = lab.engine
    ctid = make("loop", start=False)
    before = host_mounts(engine.layout.root, engine.layout.run)
    stopped = engine.df(ctid)
    assert [r["mp"] for r in stopped] == ["rootfs"] and 200 << 20 < stopped[0]["size"] <= 256 << 20
    assert "lock" not in engine.config(ctid).current.values  # mounted for the moment only
    assert host_mounts(engine.layout.root, engine.layout.run) == before
    engine.start(ctid)
    lab.sh(ctid, "dd if=/dev/zero of=/fill bs=1M count=20 2>/dev/null; sync")
    running = engine.df(ctid)[0]
    assert running["used"] >= stopped[0]["used"] + (19 << 20)


def test_fstrim_trims_image_volumes_and_skips_directories(lab, make):  # noqa: F811
    engine = lab.engine
    ctid = make("loop", {"mp0": "local:0,mp=/plain"})
    lab.sh(ctid, "dd if=/dev/urandom of=/blob bs=1M count=16 2>/dev/null; sync; rm /blob; sync")
    rows = {r["mp"]: r for r in engine.fstrim(ctid)}
    assert rows["rootfs"]["skipped"] is None and rows["rootfs"]["trimmed"] >= 16 << 20
    assert rows["mp0"]["skipped"] == "not an image"
    assert [r["mp"] for r in engine.fstrim(ctid, ignore_mountpoints=True)] == ["rootfs"]


def test_fsck_checks_a_stopped_image_and_refuses_other_volumes(lab, make):  # noqa: F811
    engine = lab.engine
    ctid = make("loop", {"mp0": "local:0,mp=/plain"})
    with pytest.raises(InvalidState, match="running"):
        engine.fsck(ctid)
    engine.stop(ctid)
    output = engine.fsck(ctid, force=True)
    assert "clean" in output or "files" in output
    with pytest.raises(NotSupported, match="not a raw image"):
        engine.fsck(ctid, "mp0")
    with pytest.raises(ValidationError, match="has no mp3"):
        engine.fsck(ctid, "mp3")
    with pytest.raises(ValidationError, match="not a volume key"):
        engine.fsck(ctid, "etc")


def test_move_volume_copies_keeps_the_old_as_unused_or_deletes_it(lab, make):  # noqa: F811
    engine = lab.engine
    ctid = make("dir", {"mp0": "local:0,mp=/data"})
    lab.sh(ctid, "echo kept > /data/f; chown 1000:1000 /data/f")
    with pytest.raises(InvalidState, match="running"):
        engine.move_volume(ctid, "mp0", "local-btrfs")
    engine.stop(ctid)
    old = engine.config(ctid).current.get("mp0")["volume"]
    new = engine.move_volume(ctid, "mp0", "local-btrfs")
    config = engine.config(ctid)
    assert new.startswith("local-btrfs:") and config.current.get("mp0")["volume"] == new
    assert config.current.get("mp0")["mp"] == "/data" and config.current.values["unused0"] == old
    engine.start(ctid)
    assert lab.sh(ctid, "cat /data/f; stat -c %u /data/f") == (0, "kept\n1000\n")
    engine.stop(ctid)
    # rootfs to btrfs, removing the old one
    old_root = engine.config(ctid).current.get("rootfs")["volume"]
    _, driver, vol = engine.storages.resolve(old_root, ctid)
    engine.move_volume(ctid, "rootfs", "local-btrfs", delete=True)
    assert not driver.path(vol).exists()
    assert engine.start(ctid).status == "running"
    engine.stop(ctid)
    with pytest.raises(ValidationError, match="already"):
        engine.move_volume(ctid, "mp0", "local-btrfs")
    with pytest.raises(ValidationError, match="not defined on this node"):
        engine.move_volume(ctid, "mp0", "nosuch")
    engine.snapshot(ctid, "s")
    with pytest.raises(InvalidState, match="snapshot"):
        engine.move_volume(ctid, "mp0", "local", delete=True)


def test_move_volume_that_fails_leaves_the_config_as_it_was(lab, make):  # noqa: F811
    engine = lab.engine
    ctid = make("dir", start=False)
    rootfs = engine._rootfs(engine.config(ctid))
    with open(rootfs / "big", "wb") as handle:
        handle.write(os.urandom(40 << 20))  # more than the tiny storage holds
    before = engine.layout.config_path(ctid).read_text()
    with pytest.raises(Exception):  # noqa: B017 - the copy's own error (no space)
        engine.move_volume(ctid, "rootfs", "tiny")
    assert engine.layout.config_path(ctid).read_text() == before
    assert not list((lab.tiny / "images").glob(f"{ctid}/*"))


def test_rescan_records_a_forgotten_volume_and_cli(lab, make):  # noqa: F811
    engine = lab.engine
    ctid = make("dir", {"mp0": "local:0,mp=/data"}, start=False)
    volume = engine.config(ctid).current.get("mp0")["volume"]
    path = engine.layout.config_path(ctid)
    path.write_text("\n".join(line for line in path.read_text().splitlines() if not line.startswith("mp0")) + "\n")
    env = {
        **os.environ,
        "CAISSON_ROOT": str(engine.layout.root),
        "CAISSON_RUN": str(engine.layout.run),
        "CAISSON_CGROUP_PARENT": engine.cgroups.parent,
    }
    dry = subprocess.run(
        [sys.executable, "-m", "engine", "rescan", "--vmid", str(ctid), "--dryrun"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert dry.returncode == 0 and "dry-run" in dry.stdout and volume in dry.stdout
    assert "unused0" not in engine.config(ctid).current.values
    from engine.rescan import rescan

    assert [r["key"] for r in rescan(engine, ctid)] == ["unused0"]
    assert engine.config(ctid).current.values["unused0"] == volume
    assert rescan(engine, ctid) == []  # nothing more to record
