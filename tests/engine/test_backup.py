"""Backups and restores of real containers: modes, what an archive keeps, Proxmox's format, failures."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import zstandard

from engine.backup import list_backups
from engine.backup.dump import backup
from engine.backup.progress import Cancelled
from engine.backup.restore import restore
from engine.backup.verify import verify
from engine.errors import (
    AlreadyExists,
    HostError,
    InvalidState,
    NotFound,
    NotSupported,
    UnsafeArchive,
    ValidationError,
)

REPO = Path(__file__).resolve().parents[2]
BASE = 100000  # the default id map


def members(path: Path) -> list[tarfile.TarInfo]:
    with (
        open(path, "rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw) as stream,
        tarfile.open(fileobj=stream, mode="r|") as tar,
    ):
        return list(tar)


def rootfs(engine, ctid: int) -> Path:
    return engine._rootfs(engine.config(ctid))


def fill(root: Path, shift: int) -> None:
    """Files of every kind the archive must keep, made from the host with the container's ids shifted."""
    srv = root / "srv"
    srv.mkdir()
    (srv / "owned").write_text("owned by 1000\n")
    os.chown(srv / "owned", shift + 1000, shift + 1001)
    (srv / "setuid").write_bytes(b"#!/bin/sh\n")
    os.chown(srv / "setuid", shift, shift)
    os.chmod(srv / "setuid", 0o4755)
    (srv / "secret").write_text("s\n")
    os.chown(srv / "secret", shift + 5, shift + 5)
    os.chmod(srv / "secret", 0o600)
    os.setxattr(srv / "owned", "user.caisson", b"kept")
    os.link(srv / "owned", srv / "hardlink")
    with open(srv / "sparse", "wb") as handle:
        handle.write(b"head")
        handle.seek(16 << 20)
        handle.write(b"tail")
    os.chown(srv / "sparse", shift, shift)
    (srv / "cache").mkdir()
    (srv / "cache" / "big").write_bytes(b"x" * 1000)
    (srv / "app.log").write_text("log\n")
    for path in (srv, srv / "cache", srv / "cache" / "big", srv / "app.log"):
        os.chown(path, shift, shift)
    (root / "tmp" / "scratch").write_text("left out by default\n")


def facts(root: Path, shift: int) -> dict[str, tuple]:
    """What must survive a round trip, with owners as the container sees them."""
    out = {}
    for name in ("owned", "setuid", "secret", "sparse"):
        st = os.lstat(root / "srv" / name)
        out[name] = (
            stat.S_IMODE(st.st_mode),
            st.st_uid - shift,
            st.st_gid - shift,
            st.st_size,
            hashlib.sha256((root / "srv" / name).read_bytes()).hexdigest(),
        )
    out["xattr"] = os.getxattr(root / "srv" / "owned", "user.caisson")
    out["linked"] = os.lstat(root / "srv" / "owned").st_ino == os.lstat(root / "srv" / "hardlink").st_ino
    return out


def test_suspend_backup_of_a_running_container_restores_to_a_new_id(engine, container, ctid_factory, tmp_path):
    root = rootfs(engine, container)
    fill(root, BASE)
    before = facts(root, BASE)
    pid = engine.status(container).pid
    seen = []
    result = backup(
        engine,
        container,
        dumpdir=tmp_path,
        mode="suspend",
        notes="{{guestname}} nightly",
        exclude_paths=["/srv/cache", "*.log"],
        progress=lambda done, total: seen.append((done, total)),
    )
    archive = Path(result.archive)
    assert archive.name.startswith(f"vzdump-lxc-{container}-") and archive.name.endswith(".tar.zst")
    assert engine.status(container).pid == pid  # thawed, not restarted
    assert engine.exec_output(container, ["true"])[0] == 0
    assert seen[-1][0] == seen[-1][1] > 16 << 20
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [archive.name, archive.name + ".notes", archive.name.replace(".tar.zst", ".log")]
    )
    listed = list_backups(tmp_path)
    assert [(b.ctid, b.compression, b.notes, b.protected) for b in listed] == [
        (container, "zstd", f"bb{container} nightly", False)
    ]

    found = members(archive)
    assert [m.name for m in found[:2]] == ["./etc/vzdump/pct.conf", "."]  # the config first, as vzdump writes
    by_name = {m.name: m for m in found}
    assert (by_name["./srv/hardlink"].uid, by_name["./srv/hardlink"].gid) == (1000, 1001)  # the container's ids
    assert by_name["./srv/owned"].islnk() and by_name["./srv/owned"].linkname == "./srv/hardlink"  # sorted walk
    assert "./srv/cache" not in by_name and "./srv/app.log" not in by_name and "./tmp/scratch" not in by_name
    assert "./tmp" in by_name

    checked = verify(archive)
    assert checked.members == len(found) and checked.hostname == f"bb{container}"

    clone = ctid_factory()
    restored = restore(engine, archive, clone)
    assert restored.ctid == clone and not restored.replaced
    new_root = rootfs(engine, clone)
    assert facts(new_root, BASE) == before
    assert os.stat(new_root / "srv" / "sparse").st_blocks * 512 < 4 << 20  # 16 MiB long, still sparse
    assert not (new_root / "etc" / "vzdump").exists()
    original, copy = engine.config(container).current.values, engine.config(clone).current.values
    assert {k: v for k, v in copy.items() if k != "rootfs"} == {k: v for k, v in original.items() if k != "rootfs"}
    assert copy["rootfs"] == f"local:{clone}/subvol-{clone}-disk-0.subvol"
    engine.start(clone)
    code, out, _ = engine.exec_output(clone, ["sh", "-c", "cat /srv/owned; stat -c '%u:%g %a' /srv/owned /srv/setuid"])
    assert (code, out.decode().split("\n")[:3]) == (0, ["owned by 1000", "1000:1001 644", "0:0 4755"])


def test_stop_mode_restarts_the_container_and_keeps_device_nodes_of_a_privileged_one(
    engine, busybox_template, ctid_factory, tmp_path
):
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "priv", "unprivileged": "0"})
    root = rootfs(engine, ctid)
    os.mknod(root / "root" / "null-copy", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    (root / "root" / "plain").write_text("p\n")
    os.chown(root / "root" / "plain", 33, 33)
    engine.start(ctid)
    pid = engine.status(ctid).pid
    result = backup(engine, ctid, dumpdir=tmp_path, mode="stop", compress="gzip")
    assert result.archive.endswith(".tar.gz")
    status = engine.status(ctid)
    assert status.status == "running" and status.pid != pid  # shut down for the copy, started again

    same = ctid_factory()
    restore(engine, result.archive, same)
    node = os.lstat(rootfs(engine, same) / "root" / "null-copy")
    assert stat.S_ISCHR(node.st_mode) and node.st_rdev == os.makedev(1, 3)
    assert not engine.config(same).unprivileged

    shifted = ctid_factory()
    outcome = restore(engine, result.archive, shifted, options={"unprivileged": "1"})
    new_root = rootfs(engine, shifted)
    assert outcome.devices_skipped == 1 and not (new_root / "root" / "null-copy").exists()
    assert os.stat(new_root / "root" / "plain").st_uid == BASE + 33
    assert os.stat(new_root / "bin" / "busybox").st_uid == BASE
    assert engine.config(shifted).unprivileged
    assert not list(tmp_path.glob(".restore-*"))  # the device-less copy is gone
    engine.start(shifted)
    assert engine.exec_output(shifted, ["stat", "-c", "%u", "/root/plain"])[1] == b"33\n"


def test_snapshot_mode_is_refused_on_directory_storage(engine, container, tmp_path):
    with pytest.raises(NotSupported, match="storage 'local'.*--mode suspend"):
        backup(engine, container, dumpdir=tmp_path, mode="snapshot")
    assert list(tmp_path.iterdir()) == [] and engine.status(container).status == "running"


def _proxmox_archive(template: Path, path: Path, conf: str) -> None:
    """What vzdump writes: pct.conf first (no ./etc entry before it), then ./ and the tree, zstd."""
    with (
        open(template, "rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw) as stream,
        tarfile.open(fileobj=stream, mode="r|") as src,
        open(path, "wb") as out,
        zstandard.ZstdCompressor().stream_writer(out) as writer,
        tarfile.open(fileobj=writer, mode="w|", format=tarfile.GNU_FORMAT) as tar,
    ):
        info = tarfile.TarInfo("./etc/vzdump/pct.conf")
        info.size = len(conf)
        tar.addfile(info, io.BytesIO(conf.encode()))
        for member in src:
            tar.addfile(member, src.extractfile(member) if member.isreg() else None)


PROXMOX_CONF = """#Restored from elsewhere
arch: amd64
cores: 1
hostname: frompve
memory: 128
ostype: unmanaged
rootfs: local-lvm:vm-104-disk-0,size=2G
swap: 0
unprivileged: 1
"""


def test_an_archive_in_proxmox_format_restores_and_boots(engine, busybox_template, ctid_factory, tmp_path):
    archive = tmp_path / "vzdump-lxc-104-2025_01_02-03_04_05.tar.zst"
    _proxmox_archive(busybox_template, archive, PROXMOX_CONF)
    assert verify(archive).hostname == "frompve"
    ctid = ctid_factory()
    restore(engine, archive, ctid)
    config = engine.config(ctid)
    assert (config.hostname, config.get("memory"), config.current.description) == (
        "frompve",
        128,
        "Restored from elsewhere",
    )
    engine.start(ctid)
    assert engine.exec_output(ctid, ["hostname"])[1] == b"frompve\n"
    assert not (rootfs(engine, ctid) / "etc" / "vzdump").exists()


def test_verify_catches_truncated_and_corrupted_archives(engine, container, tmp_path):
    archive = Path(backup(engine, container, dumpdir=tmp_path).archive)
    data = archive.read_bytes()
    cut = tmp_path / "cut" / archive.name
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ValidationError, match="corrupt or truncated"):
        verify(cut)
    bad = tmp_path / "bad" / archive.name
    bad.parent.mkdir()
    middle = len(data) // 2
    bad.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :])
    with pytest.raises(ValidationError, match="corrupt or truncated"):
        verify(bad)
    assert verify(archive).members > 100


# Runs the backup CLI with suspend mode's second pass (the one made while the container is frozen) held
# open after it copied: the test kills the process there, with the container frozen.
HANG_IN_SECOND_PASS = """
import sys, time
from pathlib import Path
from engine.backup import sync
from engine.backup.cli import main
real = sync.TreeSync.run
def run(self):
    stats = real(self)
    if self.passes == 2:
        Path(sys.argv[1]).touch()
        time.sleep(120)
    return stats
sync.TreeSync.run = run
sys.exit(main(sys.argv[2:]))
"""


def _freezer_state(engine, cgroup_parent: str, ctid: int) -> str:
    if "freezer" in engine.cgroups.mounts.v1:
        path = Path(engine.cgroups.mounts.v1["freezer"]) / cgroup_parent / str(ctid) / "freezer.state"
        return path.read_text().strip()
    frozen = Path(engine.cgroups.mounts.unified) / cgroup_parent / str(ctid) / "cgroup.freeze"
    return "FROZEN" if frozen.read_text().strip() == "1" else "THAWED"


def test_a_backup_killed_while_frozen_leaves_no_archive_and_the_container_thawed(
    engine, container, tmp_path, cgroup_parent
):
    marker, dumpdir = tmp_path / "second-pass", tmp_path / "dump"
    dumpdir.mkdir()
    env = {**os.environ, "CAISSON_CGROUP_PARENT": cgroup_parent, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            HANG_IN_SECOND_PASS,
            str(marker),
            "--root",
            str(engine.layout.root),
            "--run-dir",
            str(engine.layout.run),
            "backup",
            str(container),
            "--mode",
            "suspend",
            "--dumpdir",
            str(dumpdir),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not marker.exists():
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.02)
    assert _freezer_state(engine, cgroup_parent, container) == "FROZEN"  # killed while the container is frozen
    assert engine.status(container).lock == "backup"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not [p for p in dumpdir.iterdir() if not p.name.startswith(".")]  # no final name, no log
    left = [p.name for p in dumpdir.glob(f".tmp-{container}-*")]
    assert len(left) == 1  # a kill leaves the copy: the next backup of the container removes it
    deadline = time.monotonic() + 10
    while _freezer_state(engine, cgroup_parent, container) != "THAWED" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.exec_output(container, ["true"])[0] == 0  # the guard thawed it
    assert engine.status(container).status == "running" and engine.status(container).lock is None
    result = backup(engine, container, dumpdir=dumpdir, compress="none")
    assert f"removed the temporary copy {left[0]} a killed backup left" in "\n".join(result.log)
    assert not list(dumpdir.glob(".tmp-*"))


def _phases(engine, monkeypatch) -> list[str]:
    """The phases of a suspend backup as they happen: first pass, frozen, archive (after the thaw)."""
    phases = ["first pass"]
    real_freeze, real_thaw = engine.cgroups.freeze, engine.cgroups.thaw
    monkeypatch.setattr(
        engine.cgroups, "freeze", lambda name, **kw: (real_freeze(name, **kw), phases.append("frozen"))[0]
    )
    monkeypatch.setattr(engine.cgroups, "thaw", lambda name, **kw: (phases.append("archive"), real_thaw(name, **kw))[1])
    return phases


@pytest.mark.parametrize("phase", ["first pass", "frozen", "archive"])
def test_cancel_in_each_phase_thaws_and_leaves_nothing(engine, container, tmp_path, monkeypatch, cgroup_parent, phase):
    phases = _phases(engine, monkeypatch)
    calls = []

    def cancel() -> bool:
        if phases[-1] == phase:
            calls.append(1)
        return len(calls) > 20

    with pytest.raises(Cancelled):
        backup(engine, container, dumpdir=tmp_path, cancel=cancel)
    assert phases[-1] == ("first pass" if phase == "first pass" else "archive")  # never frozen, or thawed
    assert list(tmp_path.iterdir()) == []  # no archive, no temporary copy
    assert _freezer_state(engine, cgroup_parent, container) == "THAWED"
    assert engine.exec_output(container, ["true"])[0] == 0 and engine.status(container).lock is None


def _archived(archive: Path) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    with (
        open(archive, "rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw) as stream,
        tarfile.open(fileobj=stream, mode="r|") as tar,
    ):
        return {m.name: (m, tar.extractfile(m).read() if m.isreg() else b"") for m in tar}


def test_suspend_mode_copies_while_running_and_freezes_only_for_the_changes(
    engine, container, ctid_factory, tmp_path, monkeypatch, cgroup_parent
):
    from engine.backup import sync

    root = rootfs(engine, container) / "root"
    (root / "gone").write_text("removed after the first pass\n")
    (root / "kept").write_text("kept\n")
    os.link(root / "kept", root / "linked-later")
    os.mkfifo(root / "fifo")
    code, _, _ = engine.exec_output(
        container, ["sh", "-c", "(i=0; while true; do i=$((i+1)); echo $i >> /root/log; done) >/dev/null 2>&1 &"]
    )
    assert code == 0
    deadline = time.monotonic() + 10
    while not (root / "log").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    payload = os.urandom(3 << 20)
    events, seen = [], {}
    real_freeze, real_run = engine.cgroups.freeze, sync.TreeSync.run

    def freeze(name, **kw):
        # Changes between the passes: a file removed, one made, a mode, an xattr and a hard link changed.
        (root / "gone").unlink()
        (root / "new").write_text("made after the first pass\n")
        os.chmod(root / "kept", 0o600)
        os.setxattr(root / "kept", "user.when", b"second")
        os.unlink(root / "linked-later")
        os.link(root / "new", root / "linked-later")
        real_freeze(name, **kw)
        events.append("freeze")
        seen["log"] = (root / "log").read_bytes()  # the one point the archive must hold
        (root / "frozen").write_bytes(payload)  # written while frozen: complete in the archive

    def run(self):
        events.append(f"pass {self.passes + 1}")
        return real_run(self)

    monkeypatch.setattr(engine.cgroups, "freeze", freeze)
    monkeypatch.setattr(sync.TreeSync, "run", run)
    pid = engine.status(container).pid
    result = backup(engine, container, dumpdir=tmp_path, mode="suspend")
    assert events == ["pass 1", "freeze", "pass 2"]  # the first pass while running, the second frozen
    assert isinstance(result.frozen_ms, int) and f"frozen for {result.frozen_ms} ms" in "\n".join(result.log)
    assert _freezer_state(engine, cgroup_parent, container) == "THAWED" and engine.status(container).pid == pid
    assert engine.status(container).lock is None
    assert not list(tmp_path.glob(".tmp-*"))  # the copy is gone

    found = _archived(Path(result.archive))
    log = found["./root/log"][1]
    assert log == seen["log"] and log.endswith(b"\n")
    numbers = [int(n) for n in log.split()]
    assert numbers == list(range(1, len(numbers) + 1))
    assert found["./root/frozen"][1] == payload
    assert "./root/gone" not in found
    # 'linked-later' is now the first name (sorted walk) of 'new', no longer a second name of 'kept'
    assert found["./root/linked-later"][1] == b"made after the first pass\n"
    assert found["./root/new"][0].islnk() and found["./root/new"][0].linkname == "./root/linked-later"
    kept = found["./root/kept"][0]
    assert kept.mode == 0o600 and kept.pax_headers["SCHILY.xattr.user.when"] == "second"
    assert found["./root/fifo"][0].isfifo()
    assert len((root / "log").read_bytes()) > len(log)  # the container wrote on after the thaw

    clone = ctid_factory()
    restore(engine, result.archive, clone)
    new_root = rootfs(engine, clone) / "root"
    assert (new_root / "frozen").read_bytes() == payload and (new_root / "log").read_bytes() == seen["log"]
    assert os.lstat(new_root / "new").st_ino == os.lstat(new_root / "linked-later").st_ino


def test_bad_backup_inputs_give_clear_errors(engine, container, tmp_path):
    with pytest.raises(NotFound, match="container 99999 does not exist"):
        backup(engine, 99999, dumpdir=tmp_path)
    with pytest.raises(ValidationError, match="mode 'quick'"):
        backup(engine, container, dumpdir=tmp_path, mode="quick")
    with pytest.raises(ValidationError, match="compression 'lz4'"):
        backup(engine, container, dumpdir=tmp_path, compress="lz4")
    with pytest.raises(ValidationError, match="does not exist"):
        backup(engine, container, dumpdir=tmp_path / "missing")
    with pytest.raises(ValidationError, match="exclude-path"):
        backup(engine, container, dumpdir=tmp_path, exclude_paths=[""])
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def small_fs(tmp_path):
    """A 2 MiB tmpfs, unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_or_read_only_dump_dir_fails_and_prunes_nothing(engine, container, small_fs):
    from engine.backup.prune import PruneOptions

    old = [small_fs / f"vzdump-lxc-{container}-2020_01_0{d}-00_00_00.tar.zst" for d in (1, 2)]
    for path in old:
        path.write_bytes(b"old")
    with open(rootfs(engine, container) / "root" / "noise", "wb") as handle:
        handle.write(os.urandom(4 << 20))
    with pytest.raises(HostError, match="no space left"):
        backup(engine, container, dumpdir=small_fs, prune_options=PruneOptions(keep_last=1))
    assert sorted(small_fs.iterdir()) == old  # nothing pruned, nothing half written
    assert engine.exec_output(container, ["true"])[0] == 0
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    with pytest.raises(ValidationError, match="not writable"):
        backup(engine, container, dumpdir=small_fs, mode="stop")
    assert engine.status(container).status == "running"


def _tar(path: Path, entries: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_bad_archives_and_targets_are_refused_and_change_nothing(
    engine, busybox_template, container, ctid_factory, tmp_path
):
    good = Path(backup(engine, container, dumpdir=tmp_path).archive)
    images = sorted(os.listdir(engine.layout.images))
    ids = engine.ids()
    target = ctid_factory()
    with pytest.raises(InvalidState, match="is running"):
        restore(engine, good, container, force=True)
    with pytest.raises(AlreadyExists, match="force"):
        restore(engine, good, container)
    (tmp_path / "notatar.tar").write_bytes(b"hello" * 200)
    with pytest.raises(ValidationError, match="unknown archive format"):
        restore(engine, tmp_path / "notatar.tar", target)
    conf = b"hostname: evil\nunprivileged: 1\n"
    with pytest.raises(UnsafeArchive, match=r"'\.\.' components"):
        restore(engine, _tar(tmp_path / "dotdot.tar", [("./etc/vzdump/pct.conf", conf), ("./../escape", b"x")]), target)
    assert not (engine.layout.images / "escape").exists() and not (tmp_path / "escape").exists()
    with pytest.raises(ValidationError, match="no container config"):
        restore(engine, _tar(tmp_path / "noconf.tar", [("./bin/x", b"x")]), target)
    with pytest.raises(ValidationError, match="memory"):
        restore(engine, _tar(tmp_path / "badconf.tar", [("./etc/vzdump/pct.conf", b"memory: lots\n")]), target)
    with pytest.raises(ValidationError, match="storage 'tank'"):
        restore(engine, good, target, storage="tank")
    with pytest.raises(NotFound):
        restore(engine, tmp_path / "missing.tar.zst", target)
    assert sorted(os.listdir(engine.layout.images)) == images and engine.ids() == ids


def test_restore_over_a_stopped_container_keeps_the_old_one_until_the_new_one_is_complete(
    engine, busybox_template, ctid_factory, tmp_path
):
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "old"})
    (rootfs(engine, ctid) / "root" / "marker").write_text("old\n")
    archive = Path(backup(engine, ctid, dumpdir=tmp_path).archive)
    (rootfs(engine, ctid) / "root" / "marker").write_text("changed after the backup\n")
    before = engine.config(ctid).render()
    conf = b"hostname: new\nunprivileged: 1\n"
    bad = _tar(tmp_path / "half.tar", [("./etc/vzdump/pct.conf", conf), ("./sbin/init", b"x"), ("../x", b"x")])
    with pytest.raises(UnsafeArchive):
        restore(engine, bad, ctid, force=True)
    assert engine.config(ctid).render() == before
    assert (rootfs(engine, ctid) / "root" / "marker").read_text() == "changed after the backup\n"
    assert engine.ids().count(ctid) == 1 and not [i for i in engine.ids() if i >= 999_900_000]

    result = restore(engine, archive, ctid, force=True, options={"hostname": "renewed"})
    assert result.replaced and engine.config(ctid).hostname == "renewed"
    assert (rootfs(engine, ctid) / "root" / "marker").read_text() == "old\n"
    assert os.listdir(engine.layout.image_dir(ctid)) == [rootfs(engine, ctid).name]  # the old disk is gone
    assert not [i for i in engine.ids() if i >= 999_900_000]
    engine.start(ctid)
    assert engine.exec_output(ctid, ["hostname"])[1] == b"renewed\n"


def test_cli_backup_list_verify_prune(engine, busybox_template, ctid_factory, tmp_path, cgroup_parent):
    import json

    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "cli"})
    env = {**os.environ, "CAISSON_CGROUP_PARENT": cgroup_parent, "PYTHONPATH": str(REPO)}
    base = [
        sys.executable,
        "-m",
        "engine.backup",
        "--root",
        str(engine.layout.root),
        "--run-dir",
        str(engine.layout.run),
    ]

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*base, *args], env=env, capture_output=True, text=True, timeout=60)

    made = []
    for _ in range(2):
        done = cli("-o", "json", "backup", str(ctid), "--dumpdir", str(tmp_path), "--compress", "none")
        assert done.returncode == 0, done.stderr
        made.append(json.loads(done.stdout)[0]["archive"])
    assert made[0] != made[1] and made[0].endswith(".tar")
    listed = cli("list", "--dumpdir", str(tmp_path))
    assert listed.returncode == 0 and listed.stdout.count(f"vzdump-lxc-{ctid}-") == 2
    assert cli("verify", made[0]).stdout.startswith(f"{made[0]}: OK")
    assert cli("protect", made[0]).returncode == 0
    dry = json.loads(cli("-o", "json", "prune", "--dumpdir", str(tmp_path), "--keep-last", "1", "--dry-run").stdout)
    assert sorted((r["action"], r["reason"]) for r in dry) == [("keep", "keep-last"), ("keep", "protected")]
    assert len(list(tmp_path.glob("vzdump-*.tar"))) == 2
    bad = cli("backup", str(ctid), "--mode", "fast", "--dumpdir", str(tmp_path))
    assert bad.returncode == 2 and "mode 'fast'" in bad.stderr
    missing = cli("-o", "json", "verify", str(tmp_path / "nope.tar"))
    assert missing.returncode == 3 and json.loads(missing.stderr)["kind"] == "NotFound"
    nxt = cli("next-run", "sat 03:30", "--after", "2026-03-06T12:00:00+00:00")
    assert nxt.stdout.strip() == "2026-03-07 03:30:00+00:00"


def test_restore_keeps_an_id_map_of_its_own_and_reports_progress(
    engine, busybox_template, ctid_factory, tmp_path, monkeypatch
):
    class NoNames:  # the archive writer must not look owners' names up, file by file
        def getpwuid(self, uid):
            raise AssertionError("a user name was looked up")

        getgrgid = getpwuid

    monkeypatch.setattr(tarfile, "pwd", NoNames())
    monkeypatch.setattr(tarfile, "grp", NoNames())
    lines = ["u 0 300000 65536", "g 0 300000 65536"]
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"lxc.idmap": lines})
    assert os.stat(rootfs(engine, ctid) / "bin" / "busybox").st_uid == 300000
    archive = backup(engine, ctid, dumpdir=tmp_path).archive
    found = {m.name: m for m in members(Path(archive))}
    assert (found["./bin/busybox"].uid, found["./bin/busybox"].uname, found["./bin/busybox"].gname) == (0, "", "")

    engine.destroy(ctid)  # beside the original, the restore would get a free range (test_idranges)
    new, seen = ctid_factory(), []
    restore(engine, archive, new, progress=lambda done, total: seen.append((done, total)))
    assert engine.config(new).current.raw_values("lxc.idmap") == lines
    assert os.stat(rootfs(engine, new) / "bin" / "busybox").st_uid == 300000
    assert seen == sorted(seen) and seen[-1] == (os.path.getsize(archive),) * 2


def test_a_volume_mount_point_is_restored_as_a_volume_of_its_own(engine, busybox_template, ctid_factory, tmp_path):
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "vols", "mp0": "local:1,mp=/data,backup=1"})
    props = engine.config(ctid).get("mp0")
    _, driver, vol = engine.storages.resolve(str(props["volume"]), ctid, key="mp0")
    with driver.writable_tree(vol) as volume:  # a raw image on the directory storage, mounted privately
        (volume / "sub").mkdir()
        (volume / "sub" / "file").write_text("on the volume\n")
        os.chown(volume / "sub" / "file", BASE + 7, BASE + 7)
        os.link(volume / "sub" / "file", volume / "second")
    (rootfs(engine, ctid) / "root" / "on-root").write_text("root disk\n")
    archive = backup(engine, ctid, dumpdir=tmp_path).archive

    clone = ctid_factory()
    result = restore(engine, archive, clone)
    config = engine.config(clone)
    new = config.get("mp0")
    assert new["mp"] == "/data" and new["backup"] and new["size"] == 1 << 30
    assert str(new["volume"]) == f"local:{clone}/vm-{clone}-disk-1.raw"
    assert any(n.startswith("mp0: restored as a volume of its own") for n in result.notes)
    _, driver, vol = engine.storages.resolve(str(new["volume"]), clone, key="mp0")
    with driver.tree(vol) as copy:
        assert (copy / "sub" / "file").read_text() == "on the volume\n"
        assert os.stat(copy / "sub" / "file").st_uid == BASE + 7
        assert os.stat(copy / "second").st_ino == os.stat(copy / "sub" / "file").st_ino
        assert os.stat(copy).st_uid == BASE and not list(copy.glob(".restore-*"))
    new_root = rootfs(engine, clone)
    assert (new_root / "root" / "on-root").read_text() == "root disk\n"
    assert not list((new_root / "data").iterdir()) if (new_root / "data").exists() else True
    assert not list(tmp_path.glob(".restore-*"))
    engine.start(clone)
    assert engine.exec_output(clone, ["cat", "/data/sub/file"])[1] == b"on the volume\n"


def test_a_restore_killed_while_extracting_leaves_a_locked_container_that_is_cleared(
    engine, busybox_template, ctid_factory, tmp_path, cgroup_parent
):
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "big"})
    with open(rootfs(engine, ctid) / "root" / "data", "wb") as handle:  # about 50 MB the extraction must write
        for _ in range(50):
            handle.write(os.urandom(1 << 20))
    archive = backup(engine, ctid, dumpdir=tmp_path, compress="none").archive
    env = {**os.environ, "CAISSON_CGROUP_PARENT": cgroup_parent, "PYTHONPATH": str(REPO)}
    state = ["--root", str(engine.layout.root), "--run-dir", str(engine.layout.run)]

    def killed_restore(new: int) -> None:
        """A restore to ``new`` killed while it extracts: its config holds ``lock: create`` and names the root
        disk, whose tree is being made."""
        conf, images = engine.layout.config_path(new), engine.layout.image_dir(new)
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.backup", *state, "restore", str(archive), str(new)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = conf.read_text() if conf.exists() else ""
            if "lock: create" in text and "rootfs:" in text and images.is_dir() and any(images.iterdir()):
                break
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert "lock: create" in conf.read_text() and any(images.iterdir())  # a half-made volume left

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "engine", *state, *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    new = ctid_factory()
    killed_restore(new)
    assert engine.status(new).lock == "create"
    listed = [line.split() for line in cli("list").stdout.splitlines()]
    assert listed[0][-1] == "LOCK" and [new, "create"] in [[int(r[0]), r[-1]] for r in listed[1:]]
    started = cli("start", str(new))
    assert started.returncode == 5 and "restore of it was interrupted" in started.stderr
    assert f"python -m engine unlock {new}" in started.stderr
    with pytest.raises(InvalidState, match="interrupted"):
        engine.start(new)

    result = restore(engine, archive, new)  # a second restore removes what the first left, then succeeds
    assert not result.replaced and any("interrupted" in note for note in result.notes)
    assert engine.status(new).lock is None and "lock" not in engine.config(new).current.values
    assert os.listdir(engine.layout.image_dir(new)) == [rootfs(engine, new).name]  # no leftover volume
    assert os.path.getsize(rootfs(engine, new) / "root" / "data") == 50 << 20

    other = ctid_factory()
    killed_restore(other)
    unlocked = cli("unlock", str(other))
    assert unlocked.returncode == 0 and f"removed container {other}" in unlocked.stdout
    assert "lock: create" in unlocked.stderr  # the log line naming what was removed
    assert not engine.exists(other) and not engine.layout.image_dir(other).exists()


def test_a_create_over_an_interrupted_create_removes_what_it_left(engine, busybox_template, ctid_factory, caplog):
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "half", "mp0": "local:1,mp=/data"})
    config = engine.config(ctid)
    left = [rootfs(engine, ctid).name, str(config.get("mp0")["volume"]).rpartition("/")[2]]
    assert set(left) <= set(os.listdir(engine.layout.image_dir(ctid)))
    path = engine.layout.config_path(ctid)
    path.write_text(path.read_text() + "lock: create\n")  # as a create killed after its volumes were made
    with pytest.raises(InvalidState, match="create or restore of it was interrupted"):
        engine.set(ctid, {"memory": "64"})
    engine.create(ctid, busybox_template, {"hostname": "whole"})
    assert "lock: create" in caplog.text and "mp0" not in engine.config(ctid).current.values
    assert engine.status(ctid).lock is None and engine.config(ctid).hostname == "whole"
    assert os.listdir(engine.layout.image_dir(ctid)) == [rootfs(engine, ctid).name]
