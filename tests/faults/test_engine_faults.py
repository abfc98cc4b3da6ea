"""Every job kind killed (SIGKILL) at each of its steps, then recovery: the node whole, nothing left behind.

The commands run as real processes against the storage lab's node (btrfs, raw
images, directories); the fault hook ``CAISSON_FAULT_AT`` makes each die at
one named step.  Recovery (``engine.recovery.recover``, what the agent runs at
start and on its tick) then finishes or undoes what the dead process left.
"""

from __future__ import annotations

import pytest

from engine.recovery import recover
from tests.engine.mounts import host_mounts
from tests.faults.kit import assert_gone, assert_whole, run_killed, temporary_files

pytestmark = pytest.mark.slow


def _free_id(lab, start: int = 900) -> int:
    ident = start
    while lab.engine.exists(ident) or lab.engine.layout.config_path(ident).exists():
        ident += 1
    return ident


def _recover(lab) -> list:
    actions = recover(lab.engine)
    assert not [a for a in actions if a.what in ("kept", "failed")], actions
    return actions


@pytest.fixture
def mounts_unchanged(lab):
    before = host_mounts(lab.engine.layout.root, lab.base)
    yield
    assert host_mounts(lab.engine.layout.root, lab.base) == before


CREATE_STEPS = [
    "reserve",
    "allocate",
    "unpack",
    "inspect",
    "mount-points",
    "network",
    "distro",
    "finish",
    "write-config",
]


@pytest.mark.parametrize("step", CREATE_STEPS)
def test_create_killed(lab, busybox_template, step, mounts_unchanged):
    newid = _free_id(lab)
    backend = "local-btrfs:0.25" if CREATE_STEPS.index(step) % 2 else "local:0.25"
    run_killed(lab, "engine", ["create", newid, busybox_template, "--rootfs", backend], f"create:{step}")
    actions = _recover(lab)
    if step != "reserve":  # before reserve nothing is made
        assert any(a.ctid == newid for a in actions), actions
    assert_gone(lab, newid)


@pytest.mark.parametrize(
    ("backend", "fault"),
    [("loop", "start:cgroup"), ("btrfs", "start:spawned"), ("loop", "start:volumes")],
)
def test_start_killed(lab, make, backend, fault, mounts_unchanged):
    ctid = make(backend, start=False)
    run_killed(lab, "engine", ["start", ctid], fault)
    _recover(lab)
    assert_whole(lab, ctid, running=None)  # the start got as far as it got: stopped, or running and usable


@pytest.mark.parametrize(("verb", "fault"), [("stop", "stop:killed"), ("shutdown", "shutdown:exited")])
def test_stop_killed(lab, make, verb, fault, mounts_unchanged):
    ctid = make("loop")
    run_killed(lab, "engine", [verb, ctid], fault)
    actions = _recover(lab)
    assert [a.what for a in actions if a.ctid == ctid] == ["cleaned"]
    assert_whole(lab, ctid, running=False)


def test_set_killed(lab, make, mounts_unchanged):
    ctid = make("dir")
    run_killed(lab, "engine", ["set", ctid, "--memory", "256"], "set:applied")
    _recover(lab)
    assert lab.engine.config(ctid).get("memory") == 128  # the change was never written: the config stands
    assert_whole(lab, ctid, running=True)


@pytest.mark.parametrize("backend", ["dir", "loop", "btrfs", "overlay"])
def test_a_whole_node_needs_no_recovery(lab, make, backend):
    """Nothing is touched where no job was killed: a running container with a snapshot, a stopped one."""
    running, stopped = make(backend), make(backend, start=False)
    if backend in ("btrfs", "overlay"):
        lab.engine.snapshot(running, "kept")
    assert [a for a in recover(lab.engine) if a.ctid in (running, stopped)] == []
    assert_whole(lab, running, running=True)
    assert_whole(lab, stopped, running=False)


@pytest.mark.parametrize("backend", ["loop", "btrfs"])
def test_set_of_a_mount_point_killed(lab, make, backend, mounts_unchanged):
    """The new volume is made, the config not written: recovery names it as unused0 rather than guess."""
    ctid = make(backend, start=False)
    storage = "local" if backend == "loop" else "local-btrfs"
    run_killed(lab, "engine", ["set", ctid, "--mp0", f"{storage}:0.02,mp=/data"], "set:applied")
    actions = recover(lab.engine)
    assert [a.what for a in actions if a.ctid == ctid] == ["kept"], actions
    config = lab.engine.config(ctid)
    assert "mp0" not in config.current.values and config.current.values["unused0"].startswith(f"{storage}:{ctid}/")
    assert recover(lab.engine) == []  # named now: nothing more to do
    assert_whole(lab, ctid, running=False)


@pytest.mark.parametrize("fault", ["snapshot:prepared", "snapshot:frozen", "snapshot:taken"])
def test_snapshot_killed(lab, make, fault, mounts_unchanged):
    ctid = make("btrfs")
    run_killed(lab, "engine", ["snapshot", ctid, "half"], fault)
    assert lab.engine.config(ctid).current.values.get("lock") == "snapshot"
    actions = _recover(lab)
    assert any(a.ctid == ctid and a.what == "released" for a in actions)
    assert "half" not in lab.engine.config(ctid).snapshots
    vol = lab.engine.node.rootfs_volume(lab.engine.config(ctid))
    assert not vol[1].has_snapshot(vol[2], "half")
    assert_whole(lab, ctid, running=True)


@pytest.mark.parametrize(
    ("fault", "outcome", "marker"),
    [("rollback:stopped", "started", 0), ("rollback:volume", "completed", 1)],  # before the lock: as it was
)
def test_rollback_killed(lab, make, fault, outcome, marker, mounts_unchanged):
    ctid = make("btrfs")
    lab.engine.snapshot(ctid, "before")
    assert lab.sh(ctid, "echo later > /root/marker")[0] == 0
    run_killed(lab, "engine", ["rollback", ctid, "before"], fault)
    actions = _recover(lab)
    assert [a.what for a in actions if a.ctid == ctid] == [outcome]
    assert_whole(lab, ctid, running=True)
    assert lab.sh(ctid, "test -e /root/marker")[0] == marker  # 1: rolled back


def test_rollback_without_intent_is_kept(lab, make):
    """A rollback lock with no record of its snapshot (Proxmox's, or an older Caisson's): a person decides."""
    from engine.config import write_config

    ctid = make("btrfs", start=False)
    config = lab.engine.config(ctid)
    config.current.values["lock"] = "rollback"
    write_config(lab.engine.layout.config_path(ctid), config)
    actions = recover(lab.engine, ctid)
    assert [a.what for a in actions] == ["kept"]
    assert "roll back again" in actions[0].detail
    assert lab.engine.config(ctid).current.values["lock"] == "rollback"
    lab.engine.unlock(ctid)


def test_delete_snapshot_killed(lab, make, mounts_unchanged):
    ctid = make("btrfs")
    lab.engine.snapshot(ctid, "old")
    run_killed(lab, "engine", ["delsnapshot", ctid, "old"], "delsnapshot:marked")
    actions = _recover(lab)
    assert any(a.ctid == ctid and a.what == "completed" for a in actions)
    assert lab.engine.config(ctid).snapshots == {}
    assert_whole(lab, ctid, running=True)


@pytest.mark.parametrize(("backend", "fault"), [("btrfs", "clone:volume"), ("loop", "clone:network")])
def test_clone_killed(lab, make, backend, fault, mounts_unchanged):
    ctid = make(backend)
    newid = _free_id(lab)
    run_killed(lab, "engine", ["clone", ctid, newid], fault)
    _recover(lab)
    assert_gone(lab, newid)
    assert_whole(lab, ctid, running=True)  # thawed, if the kill came while it was frozen


def _rootfs_size(lab, ctid: int) -> tuple[int, int | None]:
    """The rootfs's size as its config says and as its storage holds it."""
    from engine.volumes import volumes_of

    volume = next(v for v in volumes_of(lab.engine.config(ctid).current) if v.key == "rootfs")
    _, driver, vol = lab.engine.storages.resolve(volume.volid, ctid, key="rootfs")
    return int(volume.props["size"]), driver.held_size(vol)


def _root_kib(lab, ctid: int) -> int:
    """The size of the container's / as it sees it (df), started for the look if it was stopped."""
    running = lab.engine.status(ctid, stats=False).status == "running"
    if not running:
        lab.engine.start(ctid)
    code, out = lab.sh(ctid, "df -k / | tail -1")
    if not running:
        lab.engine.stop(ctid)
    assert code == 0, out
    return int(out.split()[1])


@pytest.mark.parametrize("backend", ["loop", "btrfs"])
def test_resize_killed_after_the_volume_grew(lab, make, backend, mounts_unchanged):
    """Killed between growing the volume and writing the config: recovery writes the real size."""
    ctid = make(backend, start=False)
    before, held = _rootfs_size(lab, ctid)
    assert held == before
    seen = _root_kib(lab, ctid) if backend == "loop" else 0
    run_killed(lab, "engine", ["resize", ctid, "rootfs", "+64M"], "resize:grown")
    assert _rootfs_size(lab, ctid) == (before, before + (64 << 20))  # the kill left the config behind
    actions = _recover(lab)
    assert [a.what for a in actions if a.ctid == ctid] == ["completed"], actions
    assert _rootfs_size(lab, ctid) == (before + (64 << 20),) * 2
    if backend == "loop":  # the file system fills the grown image: the container sees the new size
        assert _root_kib(lab, ctid) > seen + (32 << 10)
    assert_whole(lab, ctid, running=False)
    assert lab.engine.resize(ctid, "rootfs", "+16M") == before + (80 << 20)  # and it grows on from there


def test_backup_killed_with_a_tmpdir_of_its_own(lab, make, tmp_path, mounts_unchanged):
    """The copy of a suspend backup killed mid-copy lies in its custom ``--tmpdir`` (and its partial archive
    in a custom ``--dumpdir``): recovery removes both from the directories the backup recorded."""
    ctid = make("dir")
    assert lab.sh(ctid, "head -c 2000000 /dev/urandom > /root/data")[0] == 0
    tmpdir, dumpdir = tmp_path / "scratch", tmp_path / "archives"
    tmpdir.mkdir()
    dumpdir.mkdir()
    args = ["backup", ctid, "--mode", "suspend", "--tmpdir", tmpdir, "--dumpdir", dumpdir]
    run_killed(lab, "engine.backup", args, "backup:first-pass")
    assert list(tmpdir.glob(f".tmp-{ctid}-*"))  # what the kill left
    actions = _recover(lab)
    released = [a for a in actions if a.ctid == ctid and a.what == "released"]
    assert released and str(tmpdir) in released[0].detail, actions
    assert list(tmpdir.iterdir()) == [] and list(dumpdir.iterdir()) == []
    assert_whole(lab, ctid, running=True)


BACKUPS = [
    ("dir", "suspend", "backup:held"),
    ("dir", "suspend", "backup:first-pass"),
    ("loop", "suspend", "backup:frozen"),
    ("dir", "suspend", "backup:archive"),
    ("btrfs", "snapshot", "backup:snapshot"),
    ("loop", "snapshot", "backup:archive"),
    ("dir", "stop", "backup:stopped"),
]


@pytest.mark.parametrize(("backend", "mode", "fault"), BACKUPS)
def test_backup_killed(lab, make, backend, mode, fault, mounts_unchanged):
    ctid = make(backend, options={"rootfs": "btrfs-dir:0.25"} if backend == "loop" else None)
    assert lab.sh(ctid, "head -c 3000000 /dev/urandom > /root/data; sha256sum /root/data")[0] == 0
    digest = lab.sh(ctid, "sha256sum /root/data")[1]
    run_killed(lab, "engine.backup", ["backup", ctid, "--mode", mode], fault)
    _recover(lab)
    assert_whole(lab, ctid, running=True)
    assert lab.sh(ctid, "sha256sum /root/data")[1] == digest
    assert not list((lab.engine.layout.root / "dump").glob(f"vzdump-lxc-{ctid}-*"))  # no archive claimed


@pytest.fixture(scope="module")
def archive(lab, busybox_template):
    from engine.backup.dump import backup

    ident = _free_id(lab, 880)
    lab.engine.create(ident, busybox_template, {"memory": "64"})
    (lab.base / "archives").mkdir()
    try:
        result = backup(lab.engine, ident, mode="stop", dumpdir=lab.base / "archives")
    finally:
        lab.engine.destroy(ident)
    return result.archive


@pytest.mark.parametrize("step", ["reserve", "unpack", "finish", "write-config"])
def test_restore_killed(lab, archive, step, mounts_unchanged):
    newid = _free_id(lab)
    run_killed(lab, "engine.backup", ["restore", archive, newid, "--storage", "local-btrfs"], f"create:{step}")
    _recover(lab)
    assert_gone(lab, newid)


def test_build_killed(lab, mounts_unchanged):
    run_killed(lab, "engine.builders", ["--dest", lab.engine.layout.templates, "--force", "busybox"], "build:archive")
    assert temporary_files(lab)  # the half-written template
    actions = _recover(lab)
    assert any(a.what == "swept" for a in actions)
    assert temporary_files(lab) == []


def test_download_killed_keeps_its_partial_for_a_day(lab, tmp_path):
    """A download's partial file is kept for a resume (tests/engine/test_templates_download.py resumes one);
    one nobody resumed for a day is swept."""
    import hashlib
    import http.server
    import json
    import os
    import signal
    import subprocess
    import sys
    import threading

    from tests.faults.kit import ROOT

    www = tmp_path / "www"
    www.mkdir()
    blob = os.urandom(4 << 20)
    name = "dl-1.0-1_amd64.tar.zst"
    (www / name).write_bytes(blob)
    handler = http.server.SimpleHTTPRequestHandler
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a, **k: handler(*a, directory=str(www), **k))
    handler.log_message = lambda *a: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fields = {
        "name": name,
        "package": "dl",
        "version": "1.0-1",
        "os": "busybox",
        "section": "system",
        "type": "lxc",
        "arch": "amd64",
        "location": f"http://127.0.0.1:{server.server_address[1]}/{name}",
        "source_id": "test",
        "sha512": hashlib.sha512(blob).hexdigest(),
    }
    dest = lab.engine.layout.templates
    script = (
        "import json, sys; from engine.templates import download; from engine.templates.entry import Entry; "
        f"download(Entry(**json.loads(sys.argv[1])), {str(dest)!r})"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", script, json.dumps(fields)],
            env={**os.environ, "CAISSON_FAULT_AT": "download:partial", "PYTHONPATH": str(ROOT)},
            capture_output=True,
            cwd=ROOT,
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        part = dest / f".{name}.part"
        assert part.exists()
        _recover(lab)
        assert part.exists()  # fresh: kept for the resume
        os.utime(part, (0, 0))  # nobody came back for it
        assert any(a.what == "swept" and name in a.detail for a in _recover(lab))
        assert not part.exists()
        from engine.templates import download
        from engine.templates.entry import Entry

        assert download(Entry(**fields), dest).read_bytes() == blob
        (dest / name).unlink()
    finally:
        server.shutdown()
        server.server_close()
