"""Backups and restores that fail or are killed half way: the container thawed, nothing half made kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from engine.backup.dump import backup
from engine.backup.progress import Cancelled
from engine.backup.restore import restore
from engine.errors import (
    HostError,
    InvalidState,
    ValidationError,
)
from tests.engine.backup_support import (
    REPO,
    freezer_state,
    rootfs,
)

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
    assert freezer_state(engine, cgroup_parent, container) == "FROZEN"  # killed while the container is frozen
    assert engine.status(container).lock == "backup"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not [p for p in dumpdir.iterdir() if not p.name.startswith(".")]  # no final name, no log
    left = [p.name for p in dumpdir.glob(f".tmp-{container}-*")]
    assert len(left) == 1  # a kill leaves the copy: the next backup of the container removes it
    deadline = time.monotonic() + 10
    while freezer_state(engine, cgroup_parent, container) != "THAWED" and time.monotonic() < deadline:
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
    assert freezer_state(engine, cgroup_parent, container) == "THAWED"
    assert engine.exec_output(container, ["true"])[0] == 0 and engine.status(container).lock is None


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
