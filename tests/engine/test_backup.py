"""Backups of real containers: modes, what an archive keeps, Proxmox's format, verification, the CLI."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.backup import list_backups
from engine.backup.dump import backup
from engine.backup.restore import restore
from engine.backup.verify import verify
from engine.errors import (
    NotFound,
    NotSupported,
    ValidationError,
)
from tests.engine.backup_support import (
    BASE,
    PROXMOX_CONF,
    REPO,
    archived,
    facts,
    fill,
    freezer_state,
    members,
    proxmox_archive,
    rootfs,
)


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


def test_an_archive_in_proxmox_format_restores_and_boots(engine, busybox_template, ctid_factory, tmp_path):
    archive = tmp_path / "vzdump-lxc-104-2025_01_02-03_04_05.tar.zst"
    proxmox_archive(busybox_template, archive, PROXMOX_CONF)
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
    assert freezer_state(engine, cgroup_parent, container) == "THAWED" and engine.status(container).pid == pid
    assert engine.status(container).lock is None
    assert not list(tmp_path.glob(".tmp-*"))  # the copy is gone

    found = archived(Path(result.archive))
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
