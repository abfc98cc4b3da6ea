"""Containers that behave like machines: lxcfs views, passed devices, hookscripts, time zone, provisioning
(real kernel; nesting is test_nesting.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from engine import lxcfs
from engine.errors import StartError, ValidationError
from tests.engine.test_systemd import debian_template  # noqa: F401 - fixture


def _make(engine, template, ctid_factory, **options) -> int:
    ctid = ctid_factory()
    values = {"hostname": f"m{ctid}", "memory": "256", "swap": "0", **options}
    engine.create(ctid, template, values)
    return ctid


def _rootfs(engine, ctid) -> Path:
    _, driver, vol = engine.node.rootfs_volume(engine.config(ctid))
    return driver.rootfs(vol)


def _sh(engine, ctid, script: str) -> str:
    code, out, err = engine.exec_output(ctid, ["sh", "-c", script])
    assert code == 0, (script, out, err)
    return out.decode()


# ---- lxcfs -----------------------------------------------------------------------------------
@pytest.fixture
def own_lxcfs(tmp_path, monkeypatch):
    """An lxcfs of this test at a mount point of its own (the node's, if any, is left alone)."""
    if not shutil.which("lxcfs"):
        pytest.skip("lxcfs is not installed (Debian package 'lxcfs')")
    path = tmp_path / "lxcfs"
    monkeypatch.setenv("CAISSON_LXCFS", str(path))
    pid = lxcfs.ensure(path)
    assert pid > 0 and lxcfs.serving(path)
    yield path, pid
    try:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)  # ours: ensure() started it from this process
    except (ProcessLookupError, ChildProcessError):
        pass
    subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def _free_total_mb(engine, ctid) -> int:
    """procps's ``free`` (Debian): it reads /proc/meminfo.  busybox's asks sysinfo(2), which lxcfs cannot change."""
    line = next(x for x in _sh(engine, ctid, "free -m").splitlines() if x.startswith("Mem:"))
    return int(line.split()[1])


def _meminfo_total_mb(engine, ctid) -> int:
    return int(_sh(engine, ctid, "head -1 /proc/meminfo").split()[1]) // 1024


@pytest.mark.slow
def test_free_inside_a_debian_container_says_its_limit_and_follows_set(
    engine,
    debian_template,  # noqa: F811
    ctid_factory,
    own_lxcfs,
):
    ctid = _make(engine, debian_template, ctid_factory)
    status = engine.start(ctid)
    assert not status.warnings
    assert _free_total_mb(engine, ctid) == 256
    engine.set(ctid, {"memory": "384"})
    assert _free_total_mb(engine, ctid) == 384
    engine.stop(ctid)


def test_meminfo_inside_shows_the_memory_limit_and_follows_set(engine, busybox_template, ctid_factory, own_lxcfs):
    ctid = _make(engine, busybox_template, ctid_factory)
    status = engine.start(ctid)
    assert not status.warnings
    assert _meminfo_total_mb(engine, ctid) == 256
    engine.set(ctid, {"memory": "384"})
    assert _meminfo_total_mb(engine, ctid) == 384
    engine.set(ctid, {"cores": "1"})
    assert _sh(engine, ctid, "grep -c ^processor /proc/cpuinfo").strip() == "1"
    # uptime is the container's, not the host's (which has been up longer than this test)
    assert float(_sh(engine, ctid, "cat /proc/uptime").split()[0]) < 600
    host_mem = int(open("/proc/meminfo").readline().split()[1]) // 1024
    assert host_mem > 384, "the host has more memory than the container sees"


def test_the_views_cannot_be_unmounted_from_inside(engine, busybox_template, ctid_factory, own_lxcfs):
    ctid = _make(engine, busybox_template, ctid_factory)
    engine.start(ctid)
    code, _, _ = engine.exec_output(ctid, ["umount", "/proc/meminfo"])
    assert code != 0
    assert _meminfo_total_mb(engine, ctid) == 256


def test_a_container_starts_without_lxcfs_and_says_so(engine, busybox_template, ctid_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("CAISSON_LXCFS", str(tmp_path / "gone"))
    ctid = _make(engine, busybox_template, ctid_factory)
    status = engine.start(ctid)
    assert status.status == "running"
    assert any("lxcfs is not serving" in w for w in status.warnings)
    assert _meminfo_total_mb(engine, ctid) > 256  # the host's own figures


def test_lxcfs_gone_after_a_start_does_not_stop_the_next(engine, busybox_template, ctid_factory, own_lxcfs):
    path, pid = own_lxcfs
    ctid = _make(engine, busybox_template, ctid_factory)
    engine.start(ctid)
    os.kill(pid, signal.SIGKILL)
    engine.stop(ctid)
    status = engine.start(ctid)
    assert status.status == "running"
    assert any("lxcfs is not serving" in w for w in status.warnings)


# ---- devices ---------------------------------------------------------------------------------
@pytest.mark.parametrize("unprivileged", ["1", "0"])
def test_a_passed_tun_device_works_inside(engine, busybox_template, ctid_factory, unprivileged):
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("the host has no /dev/net/tun")
    ctid = _make(engine, busybox_template, ctid_factory, unprivileged=unprivileged, dev0="/dev/net/tun,mode=0666")
    engine.start(ctid)
    # tunctl opens /dev/net/tun and makes a tap device with TUNSETIFF
    _sh(engine, ctid, "busybox tunctl -t tap7 && ip link show tap7")
    listing = _sh(engine, ctid, "ls -ln /dev/net/tun")
    assert listing.startswith("crw-rw-rw-") and " 0 " in listing


def test_a_device_is_hot_plugged_into_a_running_container(engine, busybox_template, ctid_factory):
    ctid = _make(engine, busybox_template, ctid_factory)
    engine.start(ctid)
    code, _, _ = engine.exec_output(ctid, ["busybox", "tunctl", "-t", "tap1"])
    assert code != 0, "no tun device before it is passed"
    live = engine.set(ctid, {"dev0": "/dev/net/tun,uid=1000,gid=1000,mode=0660"})
    assert "dev0" in live
    _sh(engine, ctid, "busybox tunctl -t tap1 && ip link show tap1")
    assert _sh(engine, ctid, "stat -c '%u %g %a' /dev/net/tun").split() == ["1000", "1000", "660"]


def test_deny_write_gives_a_read_only_device(engine, busybox_template, ctid_factory):
    ctid = _make(engine, busybox_template, ctid_factory, dev0="/dev/net/tun,mode=0666,deny-write=1")
    engine.start(ctid)
    code, _, _ = engine.exec_output(ctid, ["busybox", "tunctl", "-t", "tap2"])
    assert code != 0  # tunctl opens read-write: the cgroup refuses it


@pytest.fixture
def mem_node():
    """A node of the host's memory device (c 1:1) under /dev, as /dev/mem is (absent on some VMs)."""
    path = Path(f"/dev/caisson-test-mem-{os.getpid()}")
    os.mknod(path, 0o600 | 0o020000, os.makedev(1, 1))
    yield str(path)
    path.unlink()


@pytest.mark.parametrize(
    ("value", "message"),
    [("/dev/shm", "is not a device"), ("MEM", "memory or I/O ports"), ("/dev/nonexistent", "does not exist")],
)
def test_a_path_that_is_no_allowed_device_is_refused_by_name(
    engine, busybox_template, ctid_factory, mem_node, value, message
):
    value = mem_node if value == "MEM" else value
    ctid = _make(engine, busybox_template, ctid_factory)
    before = engine.config(ctid).render()
    with pytest.raises(ValidationError, match=message) as info:
        engine.set(ctid, {"dev3": value})
    assert "dev3" in str(info.value)
    assert engine.config(ctid).render() == before


def test_devices_and_hookscripts_are_root_equivalent():
    from engine.root_settings import root_equivalent, section_of

    found = root_equivalent(section_of({"dev0": "/dev/net/tun", "hookscript": "local:snippets/h.sh"}))
    assert set(found) == {"dev0", "hookscript"}


# ---- hookscripts -----------------------------------------------------------------------------
@pytest.fixture
def snippets(engine, tmp_path):
    """A storage ``snip`` holding snippets, beside the node's ``local``."""
    cfg = engine.layout.root / "storage.cfg"
    old = cfg.read_text() if cfg.exists() else None
    store = tmp_path / "snipstore"
    (store / "snippets").mkdir(parents=True)
    cfg.write_text(
        f"dir: local\n\tpath {engine.layout.root}\n\tcontent rootdir,vztmpl,backup\n\n"
        f"dir: snip\n\tpath {store}\n\tcontent snippets\n"
    )
    yield store / "snippets"
    if old is None:
        cfg.unlink()
    else:
        cfg.write_text(old)


def _hook(directory: Path, name: str, body: str) -> str:
    script = directory / name
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return f"snip:snippets/{name}"


def test_a_hookscript_sees_each_phase_in_order(engine, busybox_template, ctid_factory, snippets, tmp_path):
    trace = tmp_path / "trace"
    volid = _hook(snippets, "trace.sh", f'echo "$1 $2 $(cat /proc/$PPID/comm >/dev/null; echo ok)" >> {trace}\n')
    ctid = _make(engine, busybox_template, ctid_factory, hookscript=volid)
    engine.start(ctid)
    engine.shutdown(ctid, timeout=10)
    engine.start(ctid)
    engine.stop(ctid)
    phases = [line.split()[:2] for line in trace.read_text().splitlines()]
    expected = [[str(ctid), p] for p in ("pre-start", "post-start", "pre-stop", "post-stop")]
    assert phases == expected * 2


def test_a_failing_pre_start_hook_vetoes_the_start(engine, busybox_template, ctid_factory, snippets):
    volid = _hook(snippets, "veto.sh", 'test "$2" = pre-start && { echo "not today" >&2; exit 3; }\nexit 0\n')
    ctid = _make(engine, busybox_template, ctid_factory, hookscript=volid)
    with pytest.raises(StartError, match="not today"):
        engine.start(ctid)
    assert engine.status(ctid).status == "stopped"
    assert not engine.cgroups.exists(str(ctid))


def test_a_failing_post_start_hook_only_warns(engine, busybox_template, ctid_factory, snippets):
    volid = _hook(snippets, "late.sh", 'test "$2" = post-start && exit 1\nexit 0\n')
    ctid = _make(engine, busybox_template, ctid_factory, hookscript=volid)
    status = engine.start(ctid)
    assert status.status == "running"
    assert any("post-start" in w for w in status.warnings)


def test_a_hookscript_must_exist_on_a_snippets_storage(engine, busybox_template, ctid_factory, snippets):
    ctid = _make(engine, busybox_template, ctid_factory)
    with pytest.raises(ValidationError, match="does not exist"):
        engine.set(ctid, {"hookscript": "snip:snippets/missing.sh"})
    with pytest.raises(ValidationError, match="content type 'snippets'"):
        engine.set(ctid, {"hookscript": "local:snippets/x.sh"})


# ---- timezone --------------------------------------------------------------------------------
def test_the_timezone_is_linked_at_start(engine, busybox_template, ctid_factory):
    ctid = _make(engine, busybox_template, ctid_factory, timezone="Europe/Vienna")
    root = _rootfs(engine, ctid)
    zone = root / "usr/share/zoneinfo/Europe"
    zone.mkdir(parents=True)
    shutil.copy("/usr/share/zoneinfo/Europe/Vienna" if os.path.exists("/usr/share/zoneinfo") else "/dev/null", zone)
    engine.start(ctid)
    assert _sh(engine, ctid, "readlink /etc/localtime").strip() == "/usr/share/zoneinfo/Europe/Vienna"
    engine.stop(ctid)
    engine.set(ctid, {"timezone": "Etc/Missing"})  # not in the container: left as it is
    engine.start(ctid)
    assert _sh(engine, ctid, "readlink /etc/localtime").strip() == "/usr/share/zoneinfo/Europe/Vienna"


# ---- provisioning ----------------------------------------------------------------------------
def _wait_for(engine, ctid, path: str, tries: int = 200) -> str:
    import time

    for _ in range(tries):
        code, out, _ = engine.exec_output(ctid, ["cat", path])
        if code == 0:
            return out.decode()
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared in CT {ctid}")


def test_a_first_boot_script_runs_exactly_once(engine, busybox_template, ctid_factory):
    from engine import provision

    ctid = _make(engine, busybox_template, ctid_factory)
    script = '#!/bin/sh\necho "ran as $(id -u)" >> /root/firstboot-count\nexit 1\n'
    written = provision.write(engine, ctid, provision.Provisioning(firstboot=script))
    assert "/var/lib/caisson/firstboot" in written
    engine.start(ctid)
    assert _wait_for(engine, ctid, "/root/firstboot-count") == "ran as 0\n"
    engine.stop(ctid)
    engine.start(ctid)
    engine.reboot(ctid, timeout=10)
    assert _sh(engine, ctid, "cat /root/firstboot-count") == "ran as 0\n"
    assert _sh(engine, ctid, "ls /var/lib/caisson").split() == ["firstboot.ran"]


def test_the_cli_create_takes_a_first_boot_script(engine, busybox_template, ctid_factory, tmp_path):
    from engine.cli.main import main

    ctid = ctid_factory()
    script = tmp_path / "fb.sh"
    script.write_text("#!/bin/sh\nhostname > /root/who\n")
    argv = ["--root", str(engine.layout.root), "--run-dir", str(engine.layout.run), "create", str(ctid)]
    assert main([*argv, str(busybox_template), "--hostname", "fbcli", "--firstboot", str(script)]) == 0
    assert (_rootfs(engine, ctid) / "var/lib/caisson/firstboot").read_text() == script.read_text()
    engine.start(ctid)
    assert _wait_for(engine, ctid, "/root/who") == "fbcli\n"


def test_a_cloud_init_seed_is_written_where_nocloud_reads_it(engine, busybox_template, ctid_factory):
    from engine import provision

    ctid = _make(engine, busybox_template, ctid_factory)
    root = _rootfs(engine, ctid)
    (root / "usr/bin/cloud-init").write_text("#!/bin/sh\n")  # the template carries cloud-init
    user = "#cloud-config\npackages: [htop]\n"
    network = "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n"
    provision.write(engine, ctid, provision.Provisioning(user_data=user, network_config=network))
    seed = root / "var/lib/cloud/seed/nocloud"
    assert (seed / "user-data").read_text() == user
    assert (seed / "network-config").read_text() == network
    assert (seed / "meta-data").read_text() == f"instance-id: caisson-{ctid}\nlocal-hostname: m{ctid}\n"
    owner = engine.node.idmap_of(engine.config(ctid)).host_uid(0)
    assert (seed / "user-data").stat().st_uid == owner and (seed / "user-data").stat().st_mode & 0o777 == 0o600


def test_cloud_init_data_is_refused_for_a_template_without_it(engine, busybox_template, ctid_factory):
    from engine import provision

    ctid = _make(engine, busybox_template, ctid_factory)
    with pytest.raises(ValidationError, match="no cloud-init"):
        provision.write(engine, ctid, provision.Provisioning(user_data="#cloud-config\n"))
    assert not (_rootfs(engine, ctid) / "var/lib/cloud").exists()
    with pytest.raises(ValidationError, match="#!"):
        provision.Provisioning(firstboot="echo no shebang")


def test_provisioning_never_writes_through_a_symlink_of_the_container(engine, busybox_template, ctid_factory, tmp_path):
    from engine import provision

    ctid = _make(engine, busybox_template, ctid_factory)
    outside = tmp_path / "outside"
    outside.mkdir()
    root = _rootfs(engine, ctid)
    (root / "var/lib").mkdir(parents=True, exist_ok=True)
    (root / "var/lib/caisson").symlink_to(outside)
    try:
        provision.write(engine, ctid, provision.Provisioning(firstboot="#!/bin/sh\ntrue\n"))
    except (ValidationError, OSError):
        pass
    assert list(outside.iterdir()) == []
