"""Bad input and faults around storages, snapshots, clones and resize: clear errors, data and config unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from engine import syscalls
from engine.errors import AlreadyExists, EngineError, InvalidState, NotFound, ValidationError
from tests.engine.storage_lab import lab, make  # noqa: F401 - fixtures

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def stopped(lab, make):  # noqa: F811
    ctid = make("dir", start=False)
    lab.engine.snapshot(ctid, "base")
    return ctid


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda e, c: e.snapshot(c, "with space"), ValidationError, "snapshot name 'with space' is invalid"),
        (lambda e, c: e.snapshot(c, "a/b"), ValidationError, "'a/b' is invalid"),
        (lambda e, c: e.snapshot(c, "x" * 41), ValidationError, "at most 40"),
        (lambda e, c: e.snapshot(c, "1st"), ValidationError, "start with a letter"),
        (lambda e, c: e.snapshot(c, "current"), ValidationError, "reserved"),
        (lambda e, c: e.snapshot(c, "base"), AlreadyExists, "snapshot 'base' of container .* already exists"),
        (lambda e, c: e.rollback(c, "missing"), NotFound, r"snapshot 'missing' .* does not exist \(snapshots: base\)"),
        (lambda e, c: e.delete_snapshot(c, "missing"), NotFound, "snapshot 'missing'"),
        (lambda e, c: e.resize(c, "rootfs", "1G"), ValidationError, r"'local' \(dir\), which cannot enforce a size"),
        (lambda e, c: e.resize(c, "mp7", "+1G"), ValidationError, "has no mp7"),
        (lambda e, c: e.set(c, {"mp0": "local:0.01,mp=/proc/x"}), ValidationError, "over /proc"),
        (lambda e, c: e.set(c, {"mp0": "local:0.01,mp=/data/../etc"}), ValidationError, "without '..'"),
        (lambda e, c: e.set(c, {"mp0": "local:0.01,mp=data"}), ValidationError, "absolute path"),
        (lambda e, c: e.set(c, {"mp0": "local:0.01,mp=/"}), ValidationError, "not '/'"),
        (lambda e, c: e.set(c, {"mp0": "nosuch:1,mp=/data"}), ValidationError, "storage 'nosuch' is not defined"),
        (
            lambda e, c: e.set(c, {"mp0": "tmplonly:1,mp=/data"}),
            ValidationError,
            "storage 'tmplonly' does not hold content type 'rootdir'",
        ),
        (lambda e, c: e.set(c, {"mp0": "/proc,mp=/data"}), ValidationError, "may not be bound"),
        (lambda e, c: e.set(c, {"mp0": f"{e.layout.root}/lxc,mp=/data"}), ValidationError, "state directory"),
        (lambda e, c: e.clone(c, c + 1, storage="nosuch"), ValidationError, "storage 'nosuch' is not defined"),
        (lambda e, c: e.clone(c, c + 1, snapshot="nope"), NotFound, "snapshot 'nope'"),
    ],
    ids=[
        "space",
        "slash",
        "too-long",
        "digit-first",
        "current",
        "duplicate",
        "rollback-missing",
        "delete-missing",
        "resize-dir",
        "no-disk",
        "mp-proc",
        "mp-dotdot",
        "mp-relative",
        "mp-root",
        "unknown-storage",
        "no-rootdir",
        "bind-proc",
        "bind-state",
        "clone-unknown-storage",
        "clone-missing-snapshot",
    ],
)
def test_bad_input_changes_nothing(lab, stopped, call, error, message):  # noqa: F811
    e = lab.engine
    path = e.layout.config_path(stopped)
    before = path.read_text()
    images = sorted(os.listdir(e.layout.images / str(stopped)))
    with pytest.raises(error, match=message):
        call(e, stopped)
    assert path.read_text() == before
    assert sorted(os.listdir(e.layout.images / str(stopped))) == images
    assert not e.exists(stopped + 1)


def test_create_on_an_unknown_or_unfit_storage_is_refused(lab, make, busybox_template):  # noqa: F811
    e = lab.engine
    for options, message in (
        ({"rootfs": "nosuch:1"}, "storage 'nosuch' is not defined"),
        ({"rootfs": "tmplonly:1"}, "does not hold content type 'rootdir'"),
        ({"storage": "nosuch"}, "storage 'nosuch' is not defined"),
        ({"rootfs": "local:100/subvol-100-disk-0.subvol"}, "give '<storage>:<size in GiB>'"),
    ):
        with pytest.raises(ValidationError, match=message):
            e.create(990001, busybox_template, options)
        assert not e.exists(990001) and not (e.layout.images / "990001").exists()


def test_disk_full_during_a_snapshot_leaves_the_container_usable(lab, make):  # noqa: F811
    e = lab.engine
    ctid = make(None, {"rootfs": "tiny:0"})  # a directory on a 24 MiB file system
    filler = lab.tiny / "filler"
    free = os.statvfs(lab.tiny).f_bavail * os.statvfs(lab.tiny).f_frsize
    try:
        with open(filler, "wb") as handle:
            handle.truncate(0)
            handle.write(b"\0" * max(0, free - (512 << 10)))  # leave half a MiB: the copy cannot fit
        before = e.layout.config_path(ctid).read_text()
        with pytest.raises(EngineError, match="snapshot 'full'"):
            e.snapshot(ctid, "full")
        assert e.layout.config_path(ctid).read_text() == before
        assert [s.name for s in e.list_snapshots(ctid)] == ["current"]
        assert not [p for p in os.listdir(lab.tiny / "images" / str(ctid)) if "@" in p]
        assert lab.sh(ctid, "echo alive")[1].strip() == "alive"
    finally:
        filler.unlink(missing_ok=True)
    e.snapshot(ctid, "full")  # with room again it works
    assert [s.name for s in e.list_snapshots(ctid)] == ["full", "current"]


def test_a_process_killed_mid_snapshot_leaves_a_visible_lock(lab, make):  # noqa: F811
    e = lab.engine
    ctid = make("btrfs")
    driver_cls = type(e.storages.resolve(e.config(ctid).current.values["rootfs"].split(",")[0], ctid)[1])
    pid = syscalls.fork_quietly()
    if pid == 0:  # the "worker": dies right after the volume's snapshot, before the config's second phase
        real = driver_cls.snapshot

        def snapshot_then_die(self, *args):
            real(self, *args)
            os._exit(9)

        driver_cls.snapshot = snapshot_then_die
        try:
            e.snapshot(ctid, "halfway")
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 9
    assert e.config(ctid).current.values["lock"] == "snapshot"
    assert e.config(ctid).snapshots["halfway"].values["snapstate"] == "prepare"
    e.cgroups.thaw(str(ctid))  # the killed worker could not thaw; unlock-time recovery starts from a thawed one
    with pytest.raises(InvalidState, match=r"locked \(snapshot\).*unlock"):
        e.snapshot(ctid, "another")
    with pytest.raises(InvalidState, match="locked"):
        e.rollback(ctid, "halfway")
    assert e.unlock(ctid) == ["halfway"]
    assert [s.name for s in e.list_snapshots(ctid)] == ["current"]
    vol = e.config(ctid).current.values["rootfs"].split(",")[0].partition(":")[2]
    assert not e.storages.resolve(f"local-btrfs:{vol}", ctid)[1].has_snapshot(vol, "halfway")
    assert lab.sh(ctid, "echo alive")[1].strip() == "alive"
    e.snapshot(ctid, "halfway")
    assert [s.name for s in e.list_snapshots(ctid)] == ["halfway", "current"]


def test_clone_gets_new_macs_and_hostname(lab, make):  # noqa: F811
    e = lab.engine
    interfaces = e.layout.root / "network" / "interfaces"
    interfaces.parent.mkdir(exist_ok=True)
    interfaces.write_text("auto vmbr0\niface vmbr0 inet manual\n\tbridge-ports none\n")  # defined, never made
    ctid = make("btrfs", {"net0": "name=eth0,bridge=vmbr0"}, start=False)
    e.snapshot(ctid, "gold")
    clone = ctid + 700
    make.made.append(clone)
    e.clone(ctid, clone, snapshot="gold", hostname="web2")
    source, copy = e.config(ctid), e.config(clone)
    assert copy.hostname == "web2"
    mac_source = source.current.get("net0")["hwaddr"]
    mac_copy = copy.current.get("net0")["hwaddr"]
    assert mac_source and mac_copy and mac_source != mac_copy
    assert copy.snapshots == {} and "parent" not in copy.current.values


def _cli(root, run, *args):
    return subprocess.run(
        [sys.executable, "-m", "engine", "--root", str(root), "--run-dir", str(run), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
    )


def test_cli_storage_and_snapshot_verbs(lab, stopped, tmp_path):  # noqa: F811
    root, run = lab.engine.layout.root, lab.engine.layout.run
    listed = json.loads(_cli(root, run, "-o", "json", "storage", "list").stdout)
    by_id = {s["id"]: s for s in listed}
    assert by_id["local-btrfs"]["drivers"][0]["snapshots_instant"] is True
    assert [d["name"] for d in by_id["local"]["drivers"]] == ["dir", "loop"]
    assert _cli(root, run, "storage", "add", "dir", "extra", "--path", str(tmp_path / "extra")).returncode == 0
    assert _cli(root, run, "storage", "add", "dir", "extra", "--path", str(tmp_path)).returncode == 4
    assert "extra" in _cli(root, run, "storage", "list").stdout
    assert _cli(root, run, "storage", "status", "extra").returncode == 0
    assert _cli(root, run, "storage", "remove", "extra").returncode == 0
    assert _cli(root, run, "storage", "remove", "extra").returncode == 3
    removing = _cli(root, run, "storage", "remove", "local")
    assert removing.returncode == 5 and str(stopped) in removing.stderr
    bad = _cli(root, run, "snapshot", str(stopped), "no/slash")
    assert bad.returncode == 2 and "invalid" in bad.stderr
    assert _cli(root, run, "snapshot", str(stopped), "second", "--description", "from the CLI").returncode == 0
    tree = _cli(root, run, "listsnapshot", str(stopped)).stdout
    assert tree.index("base") < tree.index("second") < tree.index("current")
    data = json.loads(_cli(root, run, "-o", "json", "listsnapshot", str(stopped)).stdout)
    assert [(s["name"], s["parent"]) for s in data] == [("base", None), ("second", "base"), ("current", "second")]
    assert _cli(root, run, "rollback", str(stopped), "nope").returncode == 3
    assert _cli(root, run, "delsnapshot", str(stopped), "second").returncode == 0
    grow = _cli(root, run, "resize", str(stopped), "rootfs", "+1G")  # a directory: no size to hold it to
    assert grow.returncode == 2 and "cannot enforce a size" in grow.stderr
