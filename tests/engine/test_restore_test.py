"""Restore tests of real archives: a good one passes; a corrupted one and one whose container cannot boot fail,
naming why; the throwaway container is gone either way and had no network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.backup.dump import backup
from engine.backup.restoretest import HealthCheck, restore_test
from engine.network import missing_bridges_allowed


def rootfs(engine, ctid: int):
    return engine._rootfs(engine.config(ctid))


@pytest.fixture
def archive_of(engine, busybox_template, ctid_factory, tmp_path):
    """``archive_of(change)``: a stopped busybox container with a NIC on a missing bridge, changed by ``change(root)``,
    backed up; returns the archive's path."""

    def make(change=None):
        ctid = ctid_factory()
        with missing_bridges_allowed():  # a NIC on a bridge this node lacks: the copy would not start with it
            engine.create(ctid, busybox_template, {"hostname": "rt-src", "net0": "name=eth0,bridge=rtnone0,ip=dhcp"})
        if change is not None:
            change(rootfs(engine, ctid))
        return Path(backup(engine, ctid, dumpdir=tmp_path, mode="stop").archive)

    return make


def test_a_good_archive_passes_with_its_command_and_the_throwaway_is_destroyed(engine, archive_of, ctid_factory):
    archive = archive_of()
    scratch = ctid_factory()
    lines = []
    result = restore_test(engine, archive, scratch, HealthCheck(command=("cat", "/etc/hostname")), log=lines.append)
    assert result.passed, result.log
    assert result.reason == "" and set(result.timings) == {"restore", "start", "boot", "health"}
    assert "net0: left out (isolated restore)" in result.log and lines == result.log
    assert any(line.startswith("command cat /etc/hostname: exit 0: restoretest-") for line in result.log)
    assert not engine.exists(scratch)


def test_a_port_nobody_listens_on_fails_naming_it(engine, archive_of, ctid_factory):
    scratch = ctid_factory()
    result = restore_test(engine, archive_of(), scratch, HealthCheck(port=2222, boot_timeout=1.5))
    assert not result.passed and result.reason == "health: nothing listens on TCP port 2222 inside"
    assert not engine.exists(scratch)


def test_a_corrupted_archive_fails_at_the_restore(engine, archive_of, ctid_factory):
    archive = archive_of()
    data = bytearray(archive.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = os.urandom(min(4096, len(data) - middle))
    archive.write_bytes(bytes(data))
    scratch = ctid_factory()
    result = restore_test(engine, archive, scratch, HealthCheck())
    assert not result.passed and result.reason.startswith("restore: "), result.log
    assert "corrupt or truncated archive" in result.reason
    assert set(result.timings) == {"restore"}
    assert not engine.exists(scratch) and not engine.clear_interrupted_create(scratch)


def test_a_container_that_cannot_boot_fails_at_boot(engine, archive_of, ctid_factory):
    def broken_init(root):
        init = root / "sbin" / "init"
        init.unlink()
        init.write_text("#!/bin/sh\nexit 1\n")
        init.chmod(0o755)

    scratch = ctid_factory()
    result = restore_test(engine, archive_of(broken_init), scratch, HealthCheck())
    assert not result.passed and result.reason == "boot: init exited during boot (the container stopped)", result.log
    assert not engine.exists(scratch)


def test_a_port_that_listens_inside_passes(engine, archive_of, ctid_factory):
    # The health command starts a listener (busybox nc) in the copy; the check reads the copy's own sockets.
    listen = ("/bin/sh", "-c", "nc -l -p 2222 </dev/null >/dev/null 2>&1 & sleep 0.3")
    scratch = ctid_factory()
    result = restore_test(engine, archive_of(), scratch, HealthCheck(command=listen, port=2222, boot_timeout=10))
    assert result.passed, "\n".join(result.log)
    assert "TCP port 2222: listening" in result.log
    assert not engine.exists(scratch)


def test_on_an_isolated_bridge_the_port_answers_the_host_over_that_bridge_alone(engine, archive_of, ctid_factory):
    # The copy gets one interface, on a bridge made for it (no other port: no uplink); the host connects to it there.
    listen = ("/bin/sh", "-c", "nc -l -p 2222 </dev/null >/dev/null 2>&1 & sleep 0.3")
    scratch = ctid_factory()
    bridge = Path(f"/sys/class/net/rtb{scratch}")
    seen = {}

    def watch(line: str) -> None:
        if line.startswith("TCP port"):
            seen["ports"] = sorted(p.name for p in (bridge / "brif").iterdir())
            seen["net0"] = engine.config(scratch).current.values.get("net0", "")

    check = HealthCheck(command=listen, port=2222, boot_timeout=10, network="isolated")
    result = restore_test(engine, archive_of(), scratch, check, log=watch)
    assert result.passed, "\n".join(result.log)
    assert any(
        f"over rtb{scratch}" in line and line.startswith("TCP port 2222: answers at 169.254.") for line in result.log
    )
    assert len(seen["ports"]) == 1 and seen["ports"][0].startswith("veth"), seen  # the copy's veth alone
    assert f"bridge=rtb{scratch}" in seen["net0"] and "gw=" not in seen["net0"]
    assert f"bridge rtb{scratch} removed" in result.log
    assert not bridge.exists() and not engine.exists(scratch)


def test_on_an_isolated_bridge_a_silent_port_fails_and_the_bridge_goes(engine, archive_of, ctid_factory):
    scratch = ctid_factory()
    result = restore_test(engine, archive_of(), scratch, HealthCheck(port=2222, boot_timeout=1.5, network="isolated"))
    assert not result.passed, result.log
    assert result.reason.startswith("health: TCP port 2222 does not answer at 169.254.")
    assert result.reason.endswith(f"over bridge rtb{scratch}")
    assert not Path(f"/sys/class/net/rtb{scratch}").exists() and not engine.exists(scratch)


def test_an_unknown_network_mode_is_refused():
    with pytest.raises(ValueError, match="restore test network 'bridged': one of none, isolated"):
        HealthCheck(network="bridged")
