"""Migration between two engines on this machine (each its own state root, run directory and cgroup
parent), the receiver in a process of its own listening in a network namespace joined to the sender's
by a veth: offline and restart mode with data checked after, either side killed half-way, bad input."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from engine.errors import InvalidState, NotSupported, ValidationError
from engine.migrate.channel import certificate_of, make_identity
from engine.migrate.send import migrate
from tests.engine.cli_support import REPO, layout_env
from tests.engine.migrate_lab import receiver, veth_pair


@pytest.fixture(scope="module")
def lab():
    with veth_pair() as pair:
        yield pair


@pytest.fixture
def target(tmp_path, cgroup_parent):
    """A second node's engine (in this process, for looking) and its environment (for the receiver)."""
    from engine.lifecycle import Engine

    base = tmp_path / "b"
    node = Engine(root=base / "state", run_dir=base / "run", cgroup_parent=f"{cgroup_parent}-mb")
    env = {
        **os.environ,
        "CAISSON_ROOT": str(base / "state"),
        "CAISSON_RUN": str(base / "run"),
        "CAISSON_CGROUP_PARENT": f"{cgroup_parent}-mb",
    }
    yield node, env
    for ctid in node.ids():
        node.destroy(ctid, force=True)
    for root in node.cgroups.mounts.v1_roots() + ([node.cgroups.mounts.unified] if node.cgroups.mounts.unified else []):
        shutil.rmtree(os.path.join(root, f"{cgroup_parent}-mb"), ignore_errors=True)


def rootfs_file(engine, ctid, path):
    return engine.layout.root / "images" / str(ctid) / f"subvol-{ctid}-disk-0.subvol" / path


def make_with_data(engine, template, ctid):
    engine.create(ctid, template, {"hostname": f"mig{ctid}", "memory": "128", "swap": "0"})
    data = os.urandom(6 << 20)
    rootfs_file(engine, ctid, "root/data").write_bytes(data)
    rootfs_file(engine, ctid, "tmp/kept").write_text("tmp travels too")
    return hashlib.sha256(data).hexdigest()


def test_offline_migration_moves_data_and_config_and_removes_the_source(
    engine, busybox_template, ctid_factory, target, lab, tmp_path
):
    tengine, env = target
    src_ns, _, dst_ns, dst_addr = lab
    ctid = ctid_factory()
    digest = make_with_data(engine, busybox_template, ctid)
    engine.set(ctid, {"description": "moved with its config"})
    identity = tmp_path / "id.pem"
    fingerprint = make_identity(identity)
    proc, end = receiver(env, ctid, identity, dst_ns, dst_addr)
    result = migrate(engine, ctid, f"{end['address']}:{end['port']}", end["fingerprint"], identity, netns=src_ns)
    assert proc.wait(60) == 0, proc.stderr.read()
    assert result.bytes > 6 << 20 and fingerprint
    assert not engine.exists(ctid)
    assert hashlib.sha256(rootfs_file(tengine, ctid, "root/data").read_bytes()).hexdigest() == digest
    assert rootfs_file(tengine, ctid, "tmp/kept").read_text() == "tmp travels too"
    config = tengine.config(ctid)
    assert "lock" not in config.current.values and config.current.description.strip() == "moved with its config"
    tengine.start(ctid)
    try:
        assert tengine.exec_output(ctid, ["sha256sum", "/root/data"])[1].split()[0].decode() == digest
    finally:
        tengine.stop(ctid)


def test_a_volume_mount_point_travels_with_its_data(engine, busybox_template, ctid_factory, target, lab, tmp_path):
    """A container with a volume mount point: spooled on the target (each volume reads the archive once
    more), checked, restored with a volume of its own there."""
    tengine, env = target
    src_ns, _, dst_ns, dst_addr = lab
    ctid = ctid_factory()
    make_with_data(engine, busybox_template, ctid)
    engine.set(ctid, {"mp0": "local:0,mp=/srv/data"})
    mp0 = engine.storages.resolve(str(engine.config(ctid).get("mp0")["volume"]), ctid, key="mp0")
    with mp0[1].writable_tree(mp0[2]) as root:
        (Path(root) / "kept.txt").write_text("on its own volume")
    identity = tmp_path / "id.pem"
    make_identity(identity)
    proc, end = receiver(env, ctid, identity, dst_ns, dst_addr)
    migrate(engine, ctid, f"{end['address']}:{end['port']}", end["fingerprint"], identity, netns=src_ns)
    assert proc.wait(60) == 0, proc.stderr.read()
    props = tengine.config(ctid).get("mp0")
    assert props["mp"] == "/srv/data" and str(props["volume"]).startswith("local:")
    tengine.start(ctid)
    try:
        assert tengine.exec_output(ctid, ["cat", "/srv/data/kept.txt"])[1] == b"on its own volume"
    finally:
        tengine.stop(ctid)


def test_restart_migration_stops_moves_and_starts_on_the_target(
    engine, busybox_template, ctid_factory, target, lab, tmp_path
):
    tengine, env = target
    src_ns, _, dst_ns, dst_addr = lab
    ctid = ctid_factory()
    digest = make_with_data(engine, busybox_template, ctid)
    engine.start(ctid)
    identity = tmp_path / "id.pem"
    make_identity(identity)
    proc, end = receiver(env, ctid, identity, dst_ns, dst_addr)
    with pytest.raises(InvalidState, match="running: migrate it with restart"):
        migrate(engine, ctid, f"{end['address']}:{end['port']}", end["fingerprint"], identity, netns=src_ns, timeout=5)
    assert engine.status(ctid).status == "running" and "lock" not in engine.config(ctid).current.values
    migrate(engine, ctid, f"{end['address']}:{end['port']}", end["fingerprint"], identity, netns=src_ns, restart=True)
    assert proc.wait(60) == 0, proc.stderr.read()
    assert not engine.exists(ctid)
    assert tengine.status(ctid).status == "running"
    assert tengine.exec_output(ctid, ["sha256sum", "/root/data"])[1].split()[0].decode() == digest
    tengine.stop(ctid)


@pytest.mark.parametrize("side", ["sender", "receiver"])
def test_a_migration_killed_half_way_leaves_the_source_whole_and_the_target_clean(
    engine, busybox_template, ctid_factory, target, lab, tmp_path, side
):
    from engine.recovery import recover

    tengine, env = target
    src_ns, _, dst_ns, dst_addr = lab
    ctid = ctid_factory()
    digest = make_with_data(engine, busybox_template, ctid)
    engine.start(ctid)
    identity = tmp_path / "id.pem"
    make_identity(identity)
    proc, end = receiver(
        env, ctid, identity, dst_ns, dst_addr, fault="migrate:receiving" if side == "receiver" else None
    )
    to = f"{end['address']}:{end['port']}"
    if side == "sender":  # the sender in a process of its own, killed at half of the data
        send = subprocess.run(
            [
                sys.executable,
                "-m",
                "engine",
                "migrate",
                str(ctid),
                "--to",
                to,
                "--fingerprint",
                end["fingerprint"],
                "--identity",
                str(identity),
                "--netns",
                src_ns,
                "--restart",
            ],
            cwd=REPO,
            env={
                **os.environ,
                "CAISSON_ROOT": str(engine.layout.root),
                "CAISSON_RUN": str(engine.layout.run),
                "CAISSON_CGROUP_PARENT": engine.cgroups.parent,
                "CAISSON_FAULT_AT": "migrate:sending",
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert send.returncode == -9, send.stderr
        assert engine.config(ctid).current.values.get("lock") == "migrate"  # what the kill left
        proc.wait(120)  # the receiver gives up on the cut stream and removes what it made itself
    else:
        with pytest.raises(Exception, match="migration"):
            migrate(engine, ctid, to, end["fingerprint"], identity, netns=src_ns, restart=True, timeout=20)
        assert proc.wait(60) == -9
        assert (tengine.layout.root / "migrate" / f"in-{ctid}.json").exists()  # what the kill left
        recover(tengine)
    recover(engine)
    assert "lock" not in engine.config(ctid).current.values
    assert engine.status(ctid).status == "running"  # started again, as it ran
    assert engine.exec_output(ctid, ["sha256sum", "/root/data"])[1].split()[0].decode() == digest
    assert not tengine.exists(ctid)
    spool = tengine.layout.root / "migrate"
    assert not spool.exists() or not list(spool.iterdir())
    assert not (tengine.layout.root / "images" / str(ctid)).exists() or not list(
        (tengine.layout.root / "images" / str(ctid)).iterdir()
    )
    engine.stop(ctid)


def test_a_sender_killed_while_committing_keeps_its_lock_for_a_person_and_the_target_clean(
    engine, busybox_template, ctid_factory, target, lab, tmp_path
):
    """Killed after it asked for nothing yet (the commit request was never sent): which node holds the
    container is not knowable from the source, so its lock stays, naming the target; the target, never
    asked to commit, removed its copy; the data is whole on the source."""
    from engine.recovery import recover

    tengine, env = target
    src_ns, _, dst_ns, dst_addr = lab
    ctid = ctid_factory()
    digest = make_with_data(engine, busybox_template, ctid)
    identity = tmp_path / "id.pem"
    make_identity(identity)
    proc, end = receiver(env, ctid, identity, dst_ns, dst_addr)
    send = subprocess.run(
        [sys.executable, "-m", "engine", "migrate", str(ctid), "--to", f"{end['address']}:{end['port']}"]
        + ["--fingerprint", end["fingerprint"], "--identity", str(identity), "--netns", src_ns],
        cwd=REPO,
        env={**layout_env(engine), "CAISSON_FAULT_AT": "migrate:commit"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert send.returncode == -9, send.stderr
    assert proc.wait(120) != 0
    kept = [a for a in recover(engine) if a.ctid == ctid]
    assert [a.what for a in kept] == ["kept"] and "while committing" in kept[0].detail
    assert engine.config(ctid).current.values.get("lock") == "migrate"
    assert hashlib.sha256(rootfs_file(engine, ctid, "root/data").read_bytes()).hexdigest() == digest
    assert not tengine.exists(ctid)
    engine.unlock(ctid)


def test_bad_input_is_refused_naming_what_is_wrong(engine, busybox_template, ctid_factory, target, tmp_path):
    from engine.migrate.receive import Receiver

    tengine, _ = target
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": f"bad{ctid}"})
    identity = tmp_path / "id.pem"
    fingerprint = make_identity(identity)
    with pytest.raises(ValidationError, match="expected HOST:PORT"):
        migrate(engine, ctid, "nowhere", fingerprint, identity)
    with pytest.raises(ValidationError, match="64 hex digits"):
        migrate(engine, ctid, "127.0.0.1:1", "abc", identity)
    with pytest.raises(NotSupported, match="live migration"):
        migrate(engine, ctid, "127.0.0.1:1", fingerprint, identity, online=True)
    with pytest.raises(Exception, match="cannot reach the receiver"):
        migrate(engine, ctid, "127.0.0.1:1", fingerprint, identity, timeout=5)
    assert "lock" not in engine.config(ctid).current.values  # nothing left of the refused attempts
    with pytest.raises(ValidationError, match="sender's certificate"):
        Receiver(tengine, ctid, "not a certificate")
    tengine.create(ctid, busybox_template, {"hostname": "taken"})
    with pytest.raises(Exception, match="already exists on this node"):
        Receiver(tengine, ctid, certificate_of(identity))


def test_the_migrate_verbs_run_through_the_nodes_cli_service(
    engine, busybox_template, ctid_factory, target, lab, tmp_path
):
    """The thin client hands ``migrate`` to a warm CLI service (as on a node whose agent runs); the
    receiver's side, run directly, answers it; the service's log shows it ran the sender."""
    from tests.engine.cli_support import cli_service, layout_env, served

    tengine, env = target
    src_ns, _, dst_ns, dst_addr = lab
    ctid = ctid_factory()
    digest = make_with_data(engine, busybox_template, ctid)
    identity = tmp_path / "id.pem"
    socket_dir = Path(tempfile.mkdtemp(prefix="caisson-mig-", dir="/run"))
    socket_path, log = socket_dir / "cli.sock", tmp_path / "service.log"
    client_env = {**layout_env(engine), "CAISSON_CLI_SOCKET": str(socket_path)}
    try:
        with cli_service(client_env, socket_path, log):

            def cli(*args):
                return subprocess.run(
                    [sys.executable, "-m", "engine", *args],
                    cwd=REPO,
                    env=client_env,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )

            made = cli("migrate-identity", str(identity))
            assert made.returncode == 0 and len(made.stdout.strip()) == 64, made.stderr
            bad = cli(
                "migrate",
                str(ctid),
                "--to",
                "nowhere",
                "--fingerprint",
                made.stdout.strip(),
                "--identity",
                str(identity),
            )
            assert bad.returncode == 2 and "expected HOST:PORT" in bad.stderr
            proc, end = receiver(env, ctid, identity, dst_ns, dst_addr)
            sent = cli(
                "-o",
                "json",
                "migrate",
                str(ctid),
                "--to",
                f"{end['address']}:{end['port']}",
                "--fingerprint",
                end["fingerprint"],
                "--identity",
                str(identity),
                "--netns",
                src_ns,
            )
            assert sent.returncode == 0, sent.stderr
            assert json.loads(sent.stdout)["ctid"] == ctid
            assert proc.wait(60) == 0, proc.stderr.read()
            assert served(log) == 3
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
    assert not engine.exists(ctid)
    assert hashlib.sha256(rootfs_file(tengine, ctid, "root/data").read_bytes()).hexdigest() == digest


@pytest.fixture(scope="module")
def debian():
    """The Debian 12 template the systemd tests use (cached; built with debootstrap when missing)."""
    from engine.builders.debian import build_debian
    from tests.conftest import TEMPLATE_CACHE

    TEMPLATE_CACHE.mkdir(parents=True, exist_ok=True)
    return build_debian(TEMPLATE_CACHE)


@pytest.mark.slow
def test_a_debian_container_with_systemd_migrates_in_restart_mode(engine, debian, ctid_factory, target, lab, tmp_path):
    from tests.engine.test_systemd import wait_running

    tengine, env = target
    src_ns, _, dst_ns, dst_addr = lab
    ctid = ctid_factory()
    engine.create(ctid, debian, {"hostname": f"deb{ctid}", "memory": "512"})
    engine.start(ctid)
    assert wait_running(engine, ctid) in ("running", "degraded")
    code, _, err = engine.exec_output(ctid, ["sh", "-c", "echo kept > /var/lib/migrated && sync"])
    assert code == 0, err
    identity = tmp_path / "id.pem"
    make_identity(identity)
    proc, end = receiver(env, ctid, identity, dst_ns, dst_addr)
    migrate(engine, ctid, f"{end['address']}:{end['port']}", end["fingerprint"], identity, netns=src_ns, restart=True)
    assert proc.wait(120) == 0, proc.stderr.read()
    assert not engine.exists(ctid)
    try:
        assert wait_running(tengine, ctid) in ("running", "degraded")
        assert tengine.exec_output(ctid, ["cat", "/var/lib/migrated"])[1] == b"kept\n"
    finally:
        tengine.stop(ctid)
