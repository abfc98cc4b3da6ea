"""Create, start, stop, shutdown, reboot, destroy; leftovers; concurrency; survival."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from engine.errors import AlreadyExists, InvalidState, Locked, NotFound, UnsafeArchive, ValidationError
from tests.engine.mounts import host_mounts as engine_mounts

REPO = Path(__file__).resolve().parents[2]


def host_mounts(engine) -> set[str]:
    """The mounts this test's engine could have made (tests/engine/mounts.py), with their ids."""
    return engine_mounts(engine.layout.root, engine.layout.run, fields=slice(0, 5))


def cgroup_dirs(engine, ctid) -> list[str]:
    mounts = engine.cgroups.mounts
    roots = mounts.v1_roots() + ([mounts.unified] if mounts.unified else [])
    return [p for p in (os.path.join(r, engine.cgroups.parent, str(ctid)) for r in roots) if os.path.exists(p)]


def assert_nothing_left(engine, ctid, pid, mounts_before):
    assert not os.path.exists(f"/proc/{pid}"), f"init {pid} still exists (state {open(f'/proc/{pid}/stat').read()})"
    assert cgroup_dirs(engine, ctid) == []
    assert not engine.layout.run_record(ctid).exists()
    assert host_mounts(engine) == mounts_before


def test_create_start_stop_destroy_leaves_nothing(engine, busybox_template, ctid_factory):
    ctid = ctid_factory()
    mounts_before = host_mounts(engine)
    status = engine.create(ctid, busybox_template, {"hostname": "first", "memory": "256", "cores": "1"})
    assert status.status == "stopped"
    config_text = engine.layout.config_path(ctid).read_text()
    assert "hostname: first" in config_text and "unprivileged: 1" in config_text
    assert f"rootfs: local:{ctid}/subvol-{ctid}-disk-0.subvol" in config_text
    rootfs = engine._rootfs(engine.config(ctid))
    assert os.stat(rootfs / "bin" / "busybox").st_uid == 100000

    status = engine.start(ctid)
    assert status.status == "running" and status.init == "busybox"
    assert ctid in [s.ctid for s in engine.list() if s.status == "running"]
    with pytest.raises(InvalidState, match="already running"):
        engine.start(ctid)
    with pytest.raises(InvalidState, match="is running"):
        engine.destroy(ctid)

    engine.stop(ctid)
    assert engine.status(ctid).status == "stopped"
    assert_nothing_left(engine, ctid, status.pid, mounts_before)
    with pytest.raises(InvalidState, match="not running"):
        engine.stop(ctid)

    engine.destroy(ctid)
    assert not engine.exists(ctid)
    assert not engine.layout.image_dir(ctid).exists()
    with pytest.raises(NotFound):
        engine.status(ctid)


def test_shutdown_is_graceful(engine, container):
    pid = engine.status(container).pid
    engine.shutdown(container, timeout=30, force_stop=False)  # raises if init did not power off by itself
    assert engine.status(container).status == "stopped"
    assert not os.path.exists(f"/proc/{pid}")
    assert cgroup_dirs(engine, container) == []


def _stubborn_template(tmp_path: Path, busybox_template: Path) -> Path:
    """A rootfs whose init ignores the power-off signal (a shell script acting as sysvinit)."""
    root = tmp_path / "stubborn"
    from engine.unpack import extract_archive

    extract_archive(busybox_template, root, None)
    (root / "sbin" / "init").unlink()
    (root / "sbin" / "init").write_text("#!/bin/sh\ntrap '' PWR USR2\nwhile :; do sleep 1; done\n")
    (root / "sbin" / "init").chmod(0o755)
    return root


def test_shutdown_timeout_then_hard_stop(engine, busybox_template, ctid_factory, tmp_path):
    ctid = ctid_factory()
    engine.create(ctid, _stubborn_template(tmp_path, busybox_template))
    status = engine.start(ctid)
    assert status.init == "sysvinit"
    # sysvinit powers off on SIGPWR only with a powerfail entry, which the engine adds at start.
    assert engine.exec_output(ctid, ["grep", "-c", ":powerfail:", "/etc/inittab"])[1].strip() == b"1"
    with pytest.raises(InvalidState, match="did not shut down within 0.3 s"):
        engine.shutdown(ctid, timeout=0.3, force_stop=False)
    assert engine.status(ctid).status == "running"
    engine.shutdown(ctid, timeout=0.3, force_stop=True)
    assert engine.status(ctid).status == "stopped"
    assert not os.path.exists(f"/proc/{status.pid}")


def test_reboot_gives_a_new_init(engine, container):
    before = engine.status(container).pid
    after = engine.reboot(container, timeout=30)
    assert after.status == "running" and after.pid != before
    assert engine.exec(container, ["true"]) == 0


def test_exec_passes_exit_codes_stdin_and_signals(engine, container):
    assert engine.exec_output(container, ["sh", "-c", "exit 7"])[0] == 7
    assert engine.exec_output(container, ["sh", "-c", "kill -9 $$"])[0] == 128 + 9
    code, out, _ = engine.exec_output(container, ["cat"], input=b"through stdin")
    assert (code, out) == (0, b"through stdin")
    code, _, err = engine.exec_output(container, ["/no/such/command"])
    assert code == 127 and b"/no/such/command" in err


def test_exec_with_a_tty(engine, container):
    from engine import attach
    from tests.conftest import read_until_closed

    spec = engine._attach_spec(container, ["sh", "-c", "tty; stty size"], True, None, "/")
    pid, master = attach.spawn(spec)
    attach.set_winsize(master, 33, 111)
    output = read_until_closed(master)
    os.close(master)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert b"/dev/pts/" in output


def test_destroy_refuses_protected(engine, busybox_template, ctid_factory):
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"protection": "1"})
    with pytest.raises(InvalidState, match="protected"):
        engine.destroy(ctid)
    engine.set(ctid, delete=["protection"])
    engine.destroy(ctid)


def test_twenty_containers_start_and_stop_concurrently(engine, busybox_template, ctid_factory):
    ids = [ctid_factory() for _ in range(20)]
    mounts_before = host_mounts(engine)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda c: engine.create(c, busybox_template, {"memory": "64"}), ids))
        started = list(pool.map(engine.start, ids))
    assert all(s.status == "running" for s in started)
    assert len({s.pid for s in started}) == 20
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda c: engine.exec(c, ["true"]), ids))
        assert codes == [0] * 20
        list(pool.map(engine.stop, ids))
    for status in started:
        assert_nothing_left(engine, status.ctid, status.pid, mounts_before)


def test_two_starts_at_once_start_it_once(engine, busybox_template, ctid_factory):
    ctid = ctid_factory()
    engine.create(ctid, busybox_template)
    results: list[object] = []
    barrier = threading.Barrier(2)

    def go():
        barrier.wait()
        try:
            results.append(engine.start(ctid).pid)
        except (InvalidState, Locked) as exc:
            results.append(exc)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(r, int) for r in results) == 1
    assert sum(isinstance(r, InvalidState) for r in results) == 1
    assert len(engine.cgroups.procs(str(ctid))) >= 1


def test_containers_survive_the_process_that_started_them(engine, busybox_template, ctid_factory):
    ids = [ctid_factory(), ctid_factory()]
    for ctid in ids:
        engine.create(ctid, busybox_template)
    script = (
        "import os, sys, time\n"
        "from engine.lifecycle import Engine\n"
        f"e = Engine({str(engine.layout.root)!r}, {str(engine.layout.run)!r},"
        f" cgroup_parent={engine.cgroups.parent!r})\n"
        f"for c in {ids!r}: e.start(c)\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n"
    )
    starter = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert starter.stdout.readline().strip() == "started"
    starter.kill()
    starter.wait()
    for ctid in ids:
        engine.layout.run_record(ctid).unlink()  # the cache is gone too: only cgroups and the kernel remain
    listed = {s.ctid: s for s in engine.list()}
    for ctid in ids:
        assert listed[ctid].status == "running"
        assert engine.exec(ctid, ["true"]) == 0
        engine.stop(ctid)
        assert cgroup_dirs(engine, ctid) == []


def test_set_changes_limits_live(engine, container):
    live = engine.set(container, {"memory": "200", "cpulimit": "0.5", "pids": "100"})
    assert live == ["cpulimit", "memory", "pids"]
    mounts = engine.cgroups.mounts
    if engine.cgroups.name == "v1":
        base = lambda c: os.path.join(mounts.v1[c], engine.cgroups.parent, str(container))  # noqa: E731
        assert int(open(f"{base('memory')}/memory.limit_in_bytes").read()) == 200 << 20
        assert int(open(f"{base('cpu')}/cpu.cfs_quota_us").read()) == 50000
        assert int(open(f"{base('pids')}/pids.max").read()) == 100
    assert engine.config(container).get("memory") == 200


def test_set_with_a_stale_digest_is_refused(engine, busybox_template, ctid_factory):
    ctid = ctid_factory()
    engine.create(ctid, busybox_template)
    digest = engine.config(ctid).digest()
    engine.set(ctid, {"memory": "300"})
    with pytest.raises(InvalidState, match="changed by someone else"):
        engine.set(ctid, {"memory": "400"}, digest=digest)
    assert engine.config(ctid).get("memory") == 300


# ---- bad input: a clear error and nothing created -------------------------------------------


def _nothing_for(engine, ctid):
    assert not engine.exists(ctid)
    assert not engine.layout.image_dir(ctid).exists()
    leftovers = [p for p in engine.layout.images.iterdir() if p.name.startswith(f".{ctid}") or p.name == str(ctid)]
    assert leftovers == []


def test_unknown_and_duplicate_ids(engine, busybox_template, ctid_factory):
    with pytest.raises(NotFound, match="container 99999 does not exist"):
        engine.start(99999)
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "original"})
    with pytest.raises(AlreadyExists, match=f"container {ctid} already exists"):
        engine.create(ctid, busybox_template, {"hostname": "other"})
    assert engine.config(ctid).hostname == "original"


@pytest.mark.parametrize(
    "options, key",
    [
        ({"hostname": "bad;name"}, "hostname"),
        ({"memory": "abc"}, "memory"),
        ({"cores": "-2"}, "cores"),
        ({"rootfs": "local:1/x"}, "rootfs"),
        ({"bogus": "1"}, "bogus"),
    ],
)
def test_bad_options_create_nothing(engine, busybox_template, ctid_factory, options, key):
    ctid = ctid_factory()
    with pytest.raises(ValidationError) as info:
        engine.create(ctid, busybox_template, options)
    assert info.value.key == key
    _nothing_for(engine, ctid)


@pytest.mark.parametrize("ctid", ["99", "abc", "-1"])
def test_bad_ids_are_refused(engine, busybox_template, ctid):
    with pytest.raises(ValidationError, match="container ID"):
        engine.create(ctid, busybox_template)


def _tarball(tmp_path: Path, members) -> Path:
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


@pytest.mark.parametrize(
    "members",
    [
        [_file("./sbin/init"), _file("../escaped")],
        [_file("./sbin/init"), _file("/etc/escaped")],
        [_file("./sbin/init"), _link("./etc", "/etc"), _file("./etc/escaped")],
        [_file("./sbin/init"), _link("./hard", "/etc/passwd", tarfile.LNKTYPE)],
        [_file("./sbin/init"), _link("./up", "../../../../../etc")],
    ],
    ids=["dotdot", "absolute", "through-symlink", "hardlink-out", "escaping-symlink"],
)
def test_malicious_templates_create_nothing(engine, ctid_factory, tmp_path, members):
    ctid = ctid_factory()
    with pytest.raises(UnsafeArchive):
        engine.create(ctid, _tarball(tmp_path, members))
    _nothing_for(engine, ctid)
    assert not Path("/etc/escaped").exists() and not (tmp_path.parent / "escaped").exists()


def test_device_node_in_an_unprivileged_template_is_refused(engine, ctid_factory, tmp_path):
    ctid = ctid_factory()
    device = tarfile.TarInfo("./etc/mem")
    device.type, device.devmajor, device.devminor = tarfile.CHRTYPE, 1, 1
    with pytest.raises(UnsafeArchive, match="etc/mem"):
        engine.create(ctid, _tarball(tmp_path, [_file("./sbin/init"), (device, None)]))
    _nothing_for(engine, ctid)


def test_template_without_init_is_refused(engine, ctid_factory, tmp_path):
    ctid = ctid_factory()
    with pytest.raises(ValidationError, match="no /sbin/init"):
        engine.create(ctid, _tarball(tmp_path, [_file("./etc/motd")]))
    _nothing_for(engine, ctid)


def test_rootfs_outside_the_storage_is_refused_at_start(engine, busybox_template, ctid_factory):
    ctid = ctid_factory()
    engine.create(ctid, busybox_template)
    path = engine.layout.config_path(ctid)
    path.write_text(path.read_text().replace(f"local:{ctid}/", f"local:{ctid + 1}/"))
    with pytest.raises(ValidationError, match="does not belong to container"):
        engine.start(ctid)
    assert cgroup_dirs(engine, ctid) == []


def test_symlinked_dev_makes_start_fail_without_touching_the_host(engine, busybox_template, ctid_factory, tmp_path):
    ctid = ctid_factory()
    engine.create(ctid, busybox_template)
    rootfs = engine._rootfs(engine.config(ctid))
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    os.rmdir(rootfs / "dev")
    os.symlink(str(decoy), rootfs / "dev")
    mounts_before = host_mounts(engine)
    from engine.errors import StartError
    from tests.engine.test_start_network_overlap import _children

    children = _children()
    with pytest.raises(StartError, match="mount /dev.*symlink"):
        engine.start(ctid)
    assert _children() <= children  # init, killed when the builder failed, was reaped (this engine is its reaper)
    assert list(decoy.iterdir()) == []
    assert host_mounts(engine) == mounts_before
    assert cgroup_dirs(engine, ctid) == []
    assert engine.status(ctid).status == "stopped"


def test_privileged_container_is_hardened_the_same_way(engine, busybox_template, ctid_factory):
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"unprivileged": "0"})
    rootfs = engine._rootfs(engine.config(ctid))
    assert os.stat(rootfs / "bin" / "busybox").st_uid == 0
    status = engine.start(ctid)
    with open(f"/proc/{status.pid}/status") as handle:
        text = handle.read()
    assert "Uid:\t0\t0\t0\t0" in text and "Seccomp:\t2" in text
    # Its own user namespace, every id mapped to itself: root on disk, no capability over the host.
    assert os.stat(f"/proc/{status.pid}/ns/user").st_ino != os.stat("/proc/self/ns/user").st_ino
    with open(f"/proc/{status.pid}/uid_map") as handle:
        assert handle.read().split() == ["0", "0", "4294967295"]
    code, _, err = engine.exec_output(ctid, ["sh", "-c", "echo x > /proc/sys/kernel/hostname"])
    assert code != 0 and b"Read-only" in err
    code, out, _ = engine.exec_output(ctid, ["sh", "-c", "ls /proc | grep -cE '^[0-9]+$'"])
    assert int(out) < 10
    # Root can make no device node (and the devices cgroup would refuse to open one).
    code, _, err = engine.exec_output(ctid, ["sh", "-c", "mknod /tmp/kmsg c 1 11 && head -c1 /tmp/kmsg"])
    assert code != 0 and b"Operation not permitted" in err
    engine.stop(ctid)


def test_create_killed_half_way_is_cleaned_by_the_next_create(engine, busybox_template, ctid_factory):
    ctid = ctid_factory()
    script = (
        "import os, signal\n"
        "import engine.unpack as u\n"
        "from engine.lifecycle import Engine\n"
        "real = u.extract_archive\n"
        "def dying(*a, **k):\n"
        "    real(*a, **k)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)  # killed after the rootfs is unpacked, in lock: create\n"
        "u.extract_archive = dying\n"
        f"e = Engine({str(engine.layout.root)!r}, {str(engine.layout.run)!r},"
        f" cgroup_parent={engine.cgroups.parent!r})\n"
        f"e.create({ctid}, {str(busybox_template)!r})\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO)
    assert result.returncode == -9
    assert engine.layout.image_dir(ctid).exists() and engine.status(ctid).lock == "create"
    engine.create(ctid, busybox_template, {"hostname": "second-try"})
    assert engine.status(ctid).lock is None
    assert engine.start(ctid).status == "running"
    engine.stop(ctid)


def test_create_from_the_store_by_proxmox_volume_name(engine, busybox_template, ctid_factory):
    import shutil

    engine.layout.templates.mkdir(parents=True, exist_ok=True)
    shutil.copy(busybox_template, engine.layout.templates / busybox_template.name)
    ctid = ctid_factory()
    engine.create(ctid, f"local:vztmpl/{busybox_template.name}")
    assert engine.start(ctid).status == "running"
    engine.stop(ctid)
    for bad in ("local:vztmpl/../etc/passwd", "local:vztmpl/", "local:vztmpl/.hidden", "local:vztmpl/a\0b"):
        with pytest.raises(ValidationError, match="must be a file name in the store"):
            engine.create(ctid_factory(), bad)
    with pytest.raises(ValidationError, match="does not exist"):
        engine.create(ctid_factory(), "local:vztmpl/missing-1.0_amd64.tar.zst")
