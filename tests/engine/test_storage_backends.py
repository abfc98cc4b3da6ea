"""Every storage backend against the real kernel: snapshots, rollback, clones, size limits, mount points."""

from __future__ import annotations

import os

import pytest

from engine.errors import InvalidState
from tests.engine.storage_lab import host_mounts, lab, make  # noqa: F401 - fixtures


def read(lab, ctid, path="/root/a") -> str:  # noqa: F811
    code, out = lab.sh(ctid, f"cat {path} 2>&1")
    return out.strip() if code == 0 else f"<missing: {out.strip()}>"


@pytest.mark.parametrize("backend", ["dir", "loop", "btrfs", "overlay"])
def test_snapshot_rollback_delete_clone(lab, make, backend):  # noqa: F811
    e = lab.engine
    mounts_before = host_mounts(lab.base)
    ctid = make(backend)
    assert lab.sh(ctid, "echo 1 > /root/a")[0] == 0
    e.snapshot(ctid, "s1", description="first")
    lab.sh(ctid, "echo 2 > /root/a && echo extra > /root/b")
    e.snapshot(ctid, "s2")
    lab.sh(ctid, "echo 3 > /root/a")
    e.snapshot(ctid, "s3")
    lab.sh(ctid, "echo 4 > /root/a")
    assert host_mounts(lab.base) == mounts_before, host_mounts(lab.base) ^ mounts_before

    # The middle snapshot goes; the chain closes over it.
    e.delete_snapshot(ctid, "s2")
    snaps = {s.name: s for s in e.list_snapshots(ctid)}
    assert list(snaps) == ["s1", "s3", "current"]
    assert snaps["s3"].parent == "s1" and snaps["current"].parent == "s3" and snaps["s1"].description == "first"

    # Rollback of a running container: stopped, rolled back, started again.
    e.rollback(ctid, "s3")
    assert e.status(ctid).status == "running"
    assert read(lab, ctid) == "3" and read(lab, ctid, "/root/b") == "extra"
    e.rollback(ctid, "s1")
    assert read(lab, ctid) == "1" and read(lab, ctid, "/root/b").startswith("<missing")
    assert e.config(ctid).current.values["parent"] == "s1"

    # A clone of s3 diverges from its source.
    clone = e.clone(ctid, ctid + 500, snapshot="s3").ctid
    make.made.append(clone)
    assert e.config(clone).hostname == f"copy-of-{e.config(ctid).hostname}"
    e.start(clone)
    assert read(lab, clone) == "3"
    lab.sh(clone, "echo clone > /root/a")
    assert read(lab, clone) == "clone" and read(lab, ctid) == "1"
    if backend == "overlay":  # the linked clone stands on s3
        with pytest.raises(InvalidState, match=f"linked clone {clone}"):
            e.delete_snapshot(ctid, "s3")
        assert "s3" in e.config(ctid).snapshots
    e.destroy(clone, force=True)
    e.delete_snapshot(ctid, "s3")

    # Stopped: snapshot and rollback keep it stopped; the volumes come back exactly.
    e.stop(ctid)
    e.snapshot(ctid, "cold")
    e.rollback(ctid, "cold")
    assert e.status(ctid).status == "stopped"
    e.start(ctid)
    assert read(lab, ctid) == "1"
    e.destroy(ctid, force=True)
    assert host_mounts(lab.base) == mounts_before
    assert not (lab.engine.layout.images / str(ctid)).exists()


@pytest.mark.parametrize("backend", ["loop", "btrfs"])
def test_size_limit_is_enforced_inside_and_grows(lab, make, backend):  # noqa: F811
    e = lab.engine
    ctid = make(backend, {"rootfs": {"loop": "local:0.0625", "btrfs": "local-btrfs:0.0625"}[backend]})  # 64 MiB
    storage_path = e.layout.root if backend == "loop" else lab.btrfs
    free_before = os.statvfs(storage_path).f_bavail * os.statvfs(storage_path).f_frsize
    code, out = lab.sh(ctid, "dd if=/dev/urandom of=/root/big bs=1M count=120 conv=fsync 2>&1")
    assert code != 0 and ("No space left" in out or "Disk quota exceeded" in out), out
    written = int(lab.sh(ctid, "du -k /root/big | cut -f1")[1] or 0) << 10
    assert written < 70 << 20
    if backend == "loop":  # the host file system is shared with others: look at the image itself
        _, driver, vol = e._rootfs_volume(e.config(ctid))
        image = driver.path(vol)
        assert image.stat().st_size == 64 << 20 and image.stat().st_blocks * 512 <= 64 << 20
    else:  # the lab's own btrfs: its free space fell by at most the volume's size
        free_after = os.statvfs(storage_path).f_bavail * os.statvfs(storage_path).f_frsize
        assert free_before - free_after < 80 << 20
    with pytest.raises(Exception, match="shrinking"):
        e.resize(ctid, "rootfs", "32M")
    lab.sh(ctid, "rm -f /root/big; sync")
    from engine.storage.loop import _has_cap_sys_resource

    if backend == "loop" and not _has_cap_sys_resource():  # ext4 grows live only with CAP_SYS_RESOURCE
        from engine.errors import NotSupported

        with pytest.raises(NotSupported, match="CAP_SYS_RESOURCE"):
            e.resize(ctid, "rootfs", "+64M")
        assert "size=64M" in e.config(ctid).current.values["rootfs"]
        e.stop(ctid)
        assert e.resize(ctid, "rootfs", "+64M") == 128 << 20
        e.start(ctid)
    else:
        assert e.resize(ctid, "rootfs", "+64M") == 128 << 20  # live
    assert "size=128M" in e.config(ctid).current.values["rootfs"]
    code, out = lab.sh(ctid, "dd if=/dev/zero of=/root/big bs=1M count=90 2>&1 && sync")
    assert code == 0, out


def test_freeze_and_thaw_around_a_snapshot_of_a_writing_container(lab, make, monkeypatch):  # noqa: F811
    e = lab.engine
    ctid = make("btrfs")
    lab.sh(ctid, "(while true; do echo line >> /root/log; done) >/dev/null 2>&1 &")
    calls = []
    real_freeze, real_thaw = e.cgroups.freeze, e.cgroups.thaw
    monkeypatch.setattr(e.cgroups, "freeze", lambda name, **kw: (calls.append("freeze"), real_freeze(name, **kw)))
    monkeypatch.setattr(e.cgroups, "thaw", lambda name, **kw: (calls.append("thaw"), real_thaw(name, **kw)))
    e.snapshot(ctid, "busy")
    assert calls == ["freeze", "thaw"]
    snapped = e.storages.resolve(e.config(ctid).current.values["rootfs"].split(",")[0], ctid)[1]
    vol = e.config(ctid).current.values["rootfs"].split(",")[0].partition(":")[2]
    lines = (snapped.snapshot_path(vol, "busy") / "root" / "log").read_text().splitlines()
    assert lines and set(lines) == {"line"}  # whole lines only: nothing was written mid-snapshot
    size = int(lab.sh(ctid, "wc -l < /root/log")[1])
    assert int(lab.sh(ctid, "sleep 0.2; wc -l < /root/log")[1]) > size  # thawed: the writer goes on

    # A driver failure mid-snapshot: thawed all the same, nothing recorded, still usable.
    from engine.errors import HostError

    def broken(*args, **kwargs):
        raise HostError("simulated failure")

    before = e.layout.config_path(ctid).read_text()
    monkeypatch.setattr(type(snapped), "snapshot", broken)
    calls.clear()
    with pytest.raises(HostError, match="simulated"):
        e.snapshot(ctid, "broken")
    assert calls == ["freeze", "thaw"]
    assert e.layout.config_path(ctid).read_text() == before
    assert [s.name for s in e.list_snapshots(ctid)] == ["busy", "current"]
    assert lab.sh(ctid, "echo ok")[1].strip() == "ok"


def test_mount_points_volume_and_bind(lab, make, tmp_path):  # noqa: F811
    e = lab.engine
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello").write_text("from host\n")
    mounts_before = host_mounts(lab.base)
    ctid = make("dir", {"mp0": "local-btrfs:0.05,mp=/data", "mp1": f"{shared},mp=/srv/shared,ro=1"})
    mp0 = e.config(ctid).current.values["mp0"]
    assert mp0.startswith(f"local-btrfs:{ctid}/subvol-{ctid}-disk-1.subvol,mp=/data") and "size=" in mp0
    assert lab.sh(ctid, "echo inside > /data/f")[0] == 0
    assert read(lab, ctid, "/srv/shared/hello") == "from host"
    assert lab.sh(ctid, "touch /srv/shared/nope")[0] != 0  # read-only
    volume = e.storages.resolve(mp0.split(",")[0], ctid)
    assert (volume[1].path(volume[2]) / "f").read_text() == "inside\n"
    e.snapshot(ctid, "withdata")
    lab.sh(ctid, "echo later > /data/f")
    e.rollback(ctid, "withdata")
    assert read(lab, ctid, "/data/f") == "inside"
    assert host_mounts(lab.base) == mounts_before
    e.stop(ctid)

    # The container replaced its mount point with a symlink to a host path: start fails, the host is untouched.
    rootfs = e._rootfs(e.config(ctid))
    os.rename(rootfs / "data", rootfs / "data.old")
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    os.symlink(str(decoy), rootfs / "data")
    from engine.errors import StartError

    with pytest.raises(StartError, match="symlink"):
        e.start(ctid)
    assert list(decoy.iterdir()) == []
    assert host_mounts(lab.base) == mounts_before
