"""Snapshots that travel: two nodes on this machine, each with a btrfs storage on one loop-mounted btrfs
image, an overlay storage and a dir storage, the receiver in a network namespace of its own joined to the
sender's by a veth.

A busybox container with two snapshots goes as btrfs streams (each incremental on the one before) and
arrives with its snapshots, their descriptions and parent chain; a rollback there brings the old data
back.  Between overlay storages, the layers go once each, whiteouts included.  A kill half-way on either
side leaves the source whole with its snapshots and the target clean.  A target storage that cannot keep
snapshots refuses, naming them and itself, unless they are dropped."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import HostError
from engine.migrate.channel import make_identity
from engine.migrate.send import migrate
from tests.engine.cli_support import REPO, layout_env
from tests.engine.migrate_lab import receiver, veth_pair

pytestmark = pytest.mark.skipif(shutil.which("mkfs.btrfs") is None, reason="no mkfs.btrfs (scripts/setup.sh)")


@pytest.fixture(scope="module")
def lab():
    with veth_pair() as pair:
        yield pair


@pytest.fixture(scope="module")
def nodes(tmp_path_factory, cgroup_parent):
    """(source engine, target engine, target's environment): each its own state root, run directory,
    cgroup parent and storage.cfg, with ``local`` (dir), ``local-btrfs`` (btrfs) and ``local-overlay`` storages."""
    from engine.lifecycle import Engine
    from engine.storage import cfg
    from engine.storage.base import StorageDef

    base = tmp_path_factory.mktemp("migsnap")
    os.chmod(base, 0o711)
    image, mnt = base / "btrfs.img", base / "btrfs"
    with open(image, "wb") as handle:
        handle.truncate(400 << 20)
    subprocess.run(["mkfs.btrfs", "-q", str(image)], check=True, capture_output=True)
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True, capture_output=True)
    engines = []
    try:
        for side in ("a", "b"):
            root = base / side / "state"
            root.mkdir(parents=True)
            cfg.save(
                root,
                {
                    "local": StorageDef("local", "dir", root, frozenset({"rootdir", "vztmpl", "backup"})),
                    "local-btrfs": StorageDef("local-btrfs", "btrfs", mnt / side, frozenset({"rootdir"})),
                    "local-overlay": StorageDef("local-overlay", "overlay", base / side / "ov", frozenset({"rootdir"})),
                },
            )
            parent = f"{cgroup_parent}-s{side}"
            engines.append(Engine(root=root, run_dir=base / side / "run", cgroup_parent=parent))
        env = {**layout_env(engines[1]), "CAISSON_CLI_SOCKET": ""}
        yield engines[0], engines[1], env
    finally:
        for node in engines:
            for ctid in node.ids():
                node.destroy(ctid, force=True)
            mounts = node.cgroups.mounts
            for root in mounts.v1_roots() + ([mounts.unified] if mounts.unified else []):
                shutil.rmtree(os.path.join(root, node.cgroups.parent), ignore_errors=True)
        subprocess.run(["umount", str(mnt)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pair(nodes):
    yield nodes
    for node in nodes[:2]:
        for ctid in node.ids():
            node.destroy(ctid, force=True)


def volume(engine, ctid, snap=None, disk=0):
    images = engine.storages.get("local-btrfs").definition.path / "images" / str(ctid)
    path = images / f"subvol-{ctid}-disk-{disk}.subvol"
    return path.with_name(f"{path.name}@{snap}") if snap else path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def with_two_snapshots(engine, template, ctid, mp: bool = False) -> dict:
    """A container on btrfs: 3 MiB, snapshot 'first', 3 MiB more, snapshot 'second', a last change (with
    ``mp``, a volume mount point on btrfs too, changed alike)."""
    engine.create(ctid, template, {"hostname": f"snap{ctid}", "rootfs": "local-btrfs:0", "memory": "128"})
    if mp:
        engine.set(ctid, {"mp0": "local-btrfs:0,mp=/srv/data"})
    root, data = volume(engine, ctid), volume(engine, ctid, disk=1)
    (root / "root/one").write_bytes(os.urandom(3 << 20))
    for path in [root / "root/state", *([data / "state"] if mp else [])]:
        path.write_text("one")
    engine.snapshot(ctid, "first", "before the upgrade")
    (root / "root/two").write_bytes(os.urandom(3 << 20))
    for path in [root / "root/state", *([data / "state"] if mp else [])]:
        path.write_text("two")
    engine.snapshot(ctid, "second", "after it")
    for path in [root / "root/state", *([data / "state"] if mp else [])]:
        path.write_text("three")
    return {"one": sha(root / "root/one"), "two": sha(root / "root/two")}


def names_and_parents(engine, ctid):
    return [(s.name, s.parent, s.description.strip()) for s in engine.list_snapshots(ctid)]


def test_snapshots_travel_between_btrfs_storages_with_names_and_parent_chain(
    pair, busybox_template, ctid_factory, lab, tmp_path
):
    source, target, env = pair
    src_ns, _, dst_ns, dst_addr = lab
    ctid = ctid_factory()
    digests = with_two_snapshots(source, busybox_template, ctid, mp=True)
    listed = names_and_parents(source, ctid)
    identity = tmp_path / "id.pem"
    make_identity(identity)
    proc, end = receiver(env, ctid, identity, dst_ns, dst_addr)
    result = migrate(source, ctid, f"{end['address']}:{end['port']}", end["fingerprint"], identity, netns=src_ns)
    assert proc.wait(60) == 0, proc.stderr.read()
    assert not source.exists(ctid) and not volume(source, ctid).parent.exists()
    assert names_and_parents(target, ctid) == listed
    assert [n for n, p, _ in listed] == ["first", "second", "current"] and listed[1][1] == "first"
    assert listed[0][2] == "before the upgrade" and listed[2][1] == "second"
    # Incremental streams: each file's 3 MiB went once (full streams would carry 3 + 6 + 6 MiB).
    assert result.bytes < 9 << 20
    images = volume(target, ctid).parent
    assert sorted(p.name for p in images.iterdir()) == [
        f"subvol-{ctid}-disk-{disk}.subvol{snap}" for disk in (0, 1) for snap in ("", "@first", "@second")
    ]
    config = target.config(ctid)
    assert "lock" not in config.current.values
    assert str(config.get("rootfs")["volume"]) == f"local-btrfs:{ctid}/subvol-{ctid}-disk-0.subvol"
    assert str(config.get("mp0")["volume"]) == f"local-btrfs:{ctid}/subvol-{ctid}-disk-1.subvol"
    target.start(ctid)
    try:
        assert target.exec_output(ctid, ["cat", "/root/state", "/srv/data/state"])[1] == b"threethree"
    finally:
        target.stop(ctid)
    target.rollback(ctid, "first")
    root = volume(target, ctid)
    assert (root / "root/state").read_text() == "one" and not (root / "root/two").exists()
    assert (volume(target, ctid, disk=1) / "state").read_text() == "one"
    assert sha(root / "root/one") == digests["one"]
    target.rollback(ctid, "second")
    assert (root / "root/state").read_text() == "two" and sha(root / "root/two") == digests["two"]
    target.start(ctid)
    try:
        assert target.exec_output(ctid, ["cat", "/root/state"])[1] == b"two"
    finally:
        target.stop(ctid)


@pytest.mark.parametrize("side", ["sender", "receiver"])
def test_a_kill_half_way_leaves_the_source_whole_with_its_snapshots(
    pair, busybox_template, ctid_factory, lab, tmp_path, side
):
    from engine.recovery import recover

    source, target, env = pair
    src_ns, _, dst_ns, dst_addr = lab
    ctid = ctid_factory()
    digests = with_two_snapshots(source, busybox_template, ctid)
    listed = names_and_parents(source, ctid)
    identity = tmp_path / "id.pem"
    make_identity(identity)
    proc, end = receiver(
        env, ctid, identity, dst_ns, dst_addr, fault="migrate:receiving" if side == "receiver" else None
    )
    to = f"{end['address']}:{end['port']}"
    if side == "sender":
        send = subprocess.run(
            [sys.executable, "-m", "engine", "migrate", str(ctid), "--to", to, "--fingerprint", end["fingerprint"]]
            + ["--identity", str(identity), "--netns", src_ns],
            cwd=REPO,
            env={**layout_env(source), "CAISSON_FAULT_AT": "migrate:sending", "CAISSON_CLI_SOCKET": ""},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert send.returncode == -9, send.stderr
        assert volume(source, ctid, ".migrate").exists()  # what the kill left
        proc.wait(120)
    else:
        with pytest.raises(HostError, match="migration"):
            migrate(source, ctid, to, end["fingerprint"], identity, netns=src_ns, timeout=20)
        assert proc.wait(60) == -9
        recover(target)
    recover(source)
    config = source.config(ctid)
    assert "lock" not in config.current.values and names_and_parents(source, ctid) == listed
    assert not volume(source, ctid, ".migrate").exists()
    assert sha(volume(source, ctid, "first") / "root/one") == digests["one"]
    assert sha(volume(source, ctid, "second") / "root/two") == digests["two"]
    assert (volume(source, ctid) / "root/state").read_text() == "three"
    assert not target.exists(ctid)
    images = volume(target, ctid).parent
    assert not images.exists() or not list(images.iterdir())
    source.rollback(ctid, "first")
    assert (volume(source, ctid) / "root/state").read_text() == "one"


def test_a_target_storage_without_snapshots_refuses_unless_they_are_dropped(
    pair, busybox_template, ctid_factory, lab, tmp_path
):
    source, target, env = pair
    src_ns, _, dst_ns, dst_addr = lab
    ctid = ctid_factory()
    with_two_snapshots(source, busybox_template, ctid)
    listed = names_and_parents(source, ctid)
    identity = tmp_path / "id.pem"
    make_identity(identity)
    proc, end = receiver(env, ctid, identity, dst_ns, dst_addr, storage="local")
    to = f"{end['address']}:{end['port']}"
    with pytest.raises(
        HostError, match=r"has snapshots \(first, second\): the target storage 'local' \(dir\) cannot keep them"
    ):
        migrate(source, ctid, to, end["fingerprint"], identity, netns=src_ns)
    assert proc.wait(60) != 0
    assert "lock" not in source.config(ctid).current.values and names_and_parents(source, ctid) == listed
    assert not volume(source, ctid, ".migrate").exists() and not target.exists(ctid)
    proc, end = receiver(env, ctid, identity, dst_ns, dst_addr, storage="local")
    lines = []
    migrate(
        source,
        ctid,
        f"{end['address']}:{end['port']}",
        end["fingerprint"],
        identity,
        netns=src_ns,
        drop_snapshots=True,
        log=lines.append,
    )
    assert proc.wait(60) == 0, proc.stderr.read()
    assert any("leaving the snapshots behind (first, second)" in line for line in lines)
    assert not source.exists(ctid) and not volume(source, ctid).parent.exists()
    config = target.config(ctid)
    assert not config.snapshots and str(config.get("rootfs")["volume"]).startswith("local:")
    assert [s.name for s in target.list_snapshots(ctid)] == ["current"]
    target.start(ctid)
    try:
        assert target.exec_output(ctid, ["cat", "/root/state"])[1] == b"three"
    finally:
        target.stop(ctid)


def test_snapshots_travel_between_overlay_storages_as_layers(pair, busybox_template, ctid_factory, lab, tmp_path):
    """Changes made inside the running container (a deletion is a whiteout in the upper layer), snapshots
    taken stopped (the upper becomes a layer); every layer arrives once and the snapshots roll back."""
    source, target, env = pair
    src_ns, _, dst_ns, dst_addr = lab
    ctid = ctid_factory()
    source.create(ctid, busybox_template, {"hostname": f"ov{ctid}", "rootfs": "local-overlay:0", "memory": "128"})

    def inside(engine, script: str) -> bytes:
        engine.start(ctid)
        try:
            code, out, err = engine.exec_output(ctid, ["/bin/sh", "-c", script])
            assert code == 0, err
            return out
        finally:
            engine.stop(ctid)

    one = inside(source, "head -c 3145728 /dev/urandom > /root/one && echo one > /root/state && sha256sum /root/one")
    source.snapshot(ctid, "first", "before the upgrade")
    inside(source, "rm /root/one && echo two > /root/state")
    source.snapshot(ctid, "second", "after it")
    inside(source, "echo three > /root/state")
    listed = names_and_parents(source, ctid)
    driver = source.storages.get("local-overlay").plain
    records = sorted(p.name for p in (driver.images / str(ctid)).iterdir())
    identity = tmp_path / "id.pem"
    make_identity(identity)
    proc, end = receiver(env, ctid, identity, dst_ns, dst_addr)
    migrate(source, ctid, f"{end['address']}:{end['port']}", end["fingerprint"], identity, netns=src_ns)
    assert proc.wait(60) == 0, proc.stderr.read()
    assert not source.exists(ctid)
    assert names_and_parents(target, ctid) == listed
    tdriver = target.storages.get("local-overlay").plain
    assert sorted(p.name for p in (tdriver.images / str(ctid)).iterdir()) == records
    vol = f"{ctid}/subvol-{ctid}-disk-0.overlay"
    lower = tdriver._read_layers(tdriver.path(vol) / "lower")
    assert all((tdriver.layers / layer).is_dir() for layer in lower) and len(lower) == 4  # 2 snapshots, template, empty
    assert inside(target, "cat /root/state; ls /root") == b"three\nstate\n"  # the whiteout travelled
    target.rollback(ctid, "first")
    assert inside(target, "cat /root/state; sha256sum /root/one") == b"one\n" + one
    target.rollback(ctid, "second")
    assert inside(target, "cat /root/state; ls /root") == b"two\nstate\n"


def test_snapshots_travel_between_directory_storages_one_tree_each(pair, busybox_template, ctid_factory, lab, tmp_path):
    """A plain directory storage keeps a snapshot as a full copy: each goes as a tree of its own."""
    source, target, env = pair
    src_ns, _, dst_ns, dst_addr = lab
    ctid = ctid_factory()
    source.create(ctid, busybox_template, {"hostname": f"dir{ctid}", "rootfs": "local:0", "memory": "128"})
    root = source.layout.root / "images" / str(ctid) / f"subvol-{ctid}-disk-0.subvol"
    (root / "root/state").write_text("one")
    source.snapshot(ctid, "first", "before the upgrade")
    (root / "root/state").write_text("two")
    source.snapshot(ctid, "second")
    (root / "root/state").write_text("three")
    listed = names_and_parents(source, ctid)
    identity = tmp_path / "id.pem"
    make_identity(identity)
    proc, end = receiver(env, ctid, identity, dst_ns, dst_addr)
    migrate(source, ctid, f"{end['address']}:{end['port']}", end["fingerprint"], identity, netns=src_ns)
    assert proc.wait(60) == 0, proc.stderr.read()
    assert not source.exists(ctid) and names_and_parents(target, ctid) == listed
    images = target.layout.root / "images" / str(ctid)
    assert sorted(p.name for p in images.iterdir()) == [
        f"subvol-{ctid}-disk-0.subvol{s}" for s in ("", "@first", "@second")
    ]
    target.start(ctid)
    try:
        assert target.exec_output(ctid, ["cat", "/root/state"])[1] == b"three"
    finally:
        target.stop(ctid)
    target.rollback(ctid, "first")
    assert (images / f"subvol-{ctid}-disk-0.subvol" / "root/state").read_text() == "one"
