"""engine.network.dhcp with a real dnsmasq on a bridge this test creates, busybox udhcpc in namespaces.

dnsmasq listens on the test bridge only, with DNS off; its state dir is under /run because it
re-reads its hosts file as the unprivileged dnsmasq user (pytest's tmp dirs are private to root).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import time
from pathlib import Path

import pytest

from engine.errors import EngineError, ValidationError
from engine.network import dhcp, firewall
from engine.network.dhcp import DhcpServer, Lease
from engine.network.firewall import Port
from tests.engine.netlab import NetLab

NEEDED = ("ip", "busybox", "dnsmasq")
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network tests need root"),
    pytest.mark.skipif(
        not all(shutil.which(b, path=os.environ.get("PATH", "") + ":/usr/sbin") for b in NEEDED),
        reason=f"needs {', '.join(NEEDED)}",
    ),
]
UDHCPC_SCRIPT = """#!/bin/sh
[ "$1" = bound ] && /bin/busybox ip addr add "$ip/${mask:-24}" dev "$interface"
exit 0
"""


@pytest.fixture
def state_dir():
    path = Path(f"/run/caisson-test-dhcp-{os.getpid()}")
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    (path / "udhcpc.sh").write_text(UDHCPC_SCRIPT)
    (path / "udhcpc.sh").chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def server(lab, state_dir):
    net = ipaddress.IPv4Network(f"{lab.subnet}.0/24")
    srv = DhcpServer(lab.bridge, net, f"{lab.subnet}.100", f"{lab.subnet}.150", state_dir, lease_time=600)
    try:
        yield srv
    finally:
        srv.stop()


def lease(lab: NetLab, ns: str, state_dir: Path, hostname: str | None = None) -> str | None:
    """Run udhcpc once in ``ns``; the address it got, or None."""
    args = [
        "busybox",
        "udhcpc",
        "-i",
        "eth0",
        "-q",
        "-n",
        "-f",
        "-t",
        "6",
        "-T",
        "1",
        "-s",
        str(state_dir / "udhcpc.sh"),
    ]
    if hostname:
        args += ["-x", f"hostname:{hostname}"]
    done = lab.run(ns, *args)
    if done.returncode:
        return None
    for word in lab.run(ns, "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout.split():
        if "/" in word:
            return word.split("/")[0]
    return None


def dnsmasq_processes(srv: DhcpServer) -> list[int]:
    """Live processes running this server's config (a zombie's cmdline is empty)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(srv.conf).encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_a_container_gets_a_lease_which_release_and_stop_clear(lab, state_dir, server):
    ctid, ns, mac = lab.container(1, None)
    server.start()
    pid = server._pid()
    server.start()  # idempotent
    assert server.running() and server._pid() == pid and dnsmasq_processes(server) == [pid]
    ip = lease(lab, ns, state_dir, hostname="web1")
    assert ip and ipaddress.IPv4Address(f"{lab.subnet}.100") <= ipaddress.IPv4Address(ip) <= ipaddress.IPv4Address(
        f"{lab.subnet}.150"
    )
    (got,) = server.leases()
    assert (got.mac, got.ip, got.hostname) == (mac, ip, "web1") and got.expiry > time.time()
    server.release(mac.upper())
    assert server.leases() == [] and server.running() and server._pid() == pid
    server.release(mac)  # nothing left: no-op
    server.stop()
    server.stop()
    assert not server.running() and dnsmasq_processes(server) == []
    assert not server.conf.exists() and not server.pid_file.exists() and server.lease_file.exists()


def test_release_without_dhcp_release_restarts_dnsmasq_on_a_rewritten_file(lab, state_dir, server, monkeypatch):
    _, ns, mac = lab.container(1, None)
    server.start()
    assert lease(lab, ns, state_dir)
    real_which = shutil.which
    monkeypatch.setattr(
        dhcp.shutil, "which", lambda name, **kw: None if name == "dhcp_release" else real_which(name, **kw)
    )
    old = server._pid()
    server.release(mac)
    assert server.leases() == [] and server.running() and server._pid() != old
    server.stop()
    server.lease_file.write_text(f"0 {mac} {lab.subnet}.120 * *\n0 02:00:00:00:00:99 {lab.subnet}.121 x *\n")
    server.release(mac)  # stopped: the file alone
    assert [entry.mac for entry in server.leases()] == ["02:00:00:00:00:99"] and not server.running()


def test_a_static_mapping_pins_the_address(lab, state_dir, server):
    _, ns, mac = lab.container(1, None)
    server.start()
    server.add_host(mac, f"{lab.subnet}.42", "pinned")
    assert lease(lab, ns, state_dir) == f"{lab.subnet}.42"
    assert server.leases()[0].hostname == "pinned"
    with pytest.raises(ValidationError):
        server.add_host("02:00:00:00:00:77", f"{lab.subnet}.42", None)  # taken by another MAC
    server.remove_host(mac)
    server.remove_host(mac)
    assert server.hosts_file.read_text() == ""


def test_a_firewalled_container_without_an_address_yet_still_gets_one(lab, state_dir, server):
    ctid, ns, mac = lab.container(1, None)
    server.start()
    try:
        firewall.apply(ctid, [Port(f"veth{ctid}i0", mac, [], [])], firewall.FirewallPolicy(True, "DROP", "DROP"))
        assert lease(lab, ns, state_dir)
    finally:
        firewall.remove(ctid)


def test_start_says_which_bridge_failed(lab, state_dir):
    srv = DhcpServer("csnosuchbr0", "10.214.251.0/24", "10.214.251.10", "10.214.251.20", state_dir)
    with pytest.raises(EngineError, match="csnosuchbr0.*no such interface"):
        srv.start()
    elsewhere = DhcpServer(lab.bridge, "10.214.251.0/24", "10.214.251.10", "10.214.251.20", state_dir)
    with pytest.raises(EngineError, match=f"{lab.bridge}.*no address in 10.214.251.0/24"):
        elsewhere.start()
    assert not srv.running() and not elsewhere.running()


def test_start_without_dnsmasq_names_the_package(lab, state_dir, server, monkeypatch):
    monkeypatch.setattr(dhcp.shutil, "which", lambda name, **kw: None)
    with pytest.raises(EngineError, match="dnsmasq-base"):
        server.start()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bridge": "-br"},
        {"bridge": "a/b"},
        {"bridge": "x" * 16},
        {"bridge": "br0\ndhcp-range=1"},
        {"bridge": ""},
        {"range_start": "10.214.9.10"},
        {"range_end": "10.214.251.255"},
        {"range_start": "10.214.251.30"},
        {"range_end": "10.214.251.5,static"},
        {"lease_time": 60},
        {"router": "8.8.8.8"},
        {"state_dir": Path("/run/x\nuser=root")},
        {"subnet": "10.214.251.0/33"},
        {"dns_servers": ("1.2.3.4\nport=53",)},
    ],
)
def test_bad_arguments_are_refused(kwargs):
    args = {
        "bridge": "csbr0",
        "subnet": "10.214.251.0/24",
        "range_start": "10.214.251.10",
        "range_end": "10.214.251.20",
        "state_dir": Path("/run/caisson-test"),
        **kwargs,
    }
    with pytest.raises(ValidationError):
        DhcpServer(**args)


def test_bad_mappings_are_refused(state_dir):
    srv = DhcpServer("csbr0", "10.214.251.0/24", "10.214.251.10", "10.214.251.20", state_dir)
    for mac, ip, name in (
        ("02:00:00:00:00:0g", None, None),
        ("02:00:00:00:00:01,x", None, None),
        ("02:00:00:00:00:01", "10.214.252.5", None),
        ("02:00:00:00:00:01", None, "a,b"),
        ("02:00:00:00:00:01", None, "x\ndhcp-range=1"),
    ):
        with pytest.raises(ValidationError):
            srv.add_host(mac, ip, name)
    with pytest.raises(ValidationError):
        srv.release("--help")


def test_lease_file_parsing(state_dir):
    srv = DhcpServer("csbr0", "10.214.251.0/24", "10.214.251.10", "10.214.251.20", state_dir)
    srv.dir.mkdir()
    srv.lease_file.write_text(
        "1700000000 02:00:00:00:00:01 10.214.251.11 web 01:02:00:00:00:00:01\n"
        "0 02:00:00:00:00:02 10.214.251.12 * *\n"
        "duid 00:01:00:01:2c:aa:bb:cc\n"
        "garbage\n"
    )
    assert srv.leases() == [
        Lease(1700000000, "02:00:00:00:00:01", "10.214.251.11", "web", "01:02:00:00:00:00:01"),
        Lease(0, "02:00:00:00:00:02", "10.214.251.12", None, None),
    ]
