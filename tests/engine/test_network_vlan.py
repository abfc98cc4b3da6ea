"""VLAN tags on bridges that are not VLAN-aware, against the real kernel: per-tag bridges ``<bridge>v<N>``.

The bridges, the veth standing in for a physical port and the namespaces standing in for containers
are all made here and removed afterwards; frames go only between them and the host.  The port's far
end stays on the host, unconfigured (no addresses, no IPv6), where a raw socket reads what leaves
through the port.
"""

from __future__ import annotations

import re
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from engine import network as net
from engine.errors import NotSupported, ValidationError
from engine.network import firewall, netlink, vlanbridge
from engine.reverter import Reverter
from tests.engine.network_support import (  # noqa: F401 - fixtures
    RUN,
    VLAN_DEVICES,
    host_links,
    ip,
    nic,
    plug,
    spaces_fixture,
)

PARENT = f"cbr{RUN}t"  # no ports, MTU 1400
PORTED = f"cbr{RUN}u"  # its port is a veth: PORT on the bridge, FAR on the host
PORT, FAR = f"cbr{RUN}e", f"cbr{RUN}f"
LONG = f"cbr{RUN}longn"  # LONGv10 fits in 15 characters, LONGv100 does not
ETH_P_ALL, SOL_PACKET, PACKET_AUXDATA, TP_STATUS_VLAN_VALID, PACKET_OUTGOING = 3, 263, 8, 0x10, 4

INTERFACES = f"""
iface {PARENT} inet manual
    bridge-ports none
    mtu 1400

iface {PORTED} inet manual
    bridge-ports {PORT}

iface {LONG} inet manual
    bridge-ports none
"""


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def made() -> list[str]:
    """This run's interfaces that look like the engine's per-tag bridges or VLAN devices."""
    names = re.findall(r"^\d+: ([^:@]+)", host_links(), re.M)
    return [n for n in names if n.startswith(f"cbr{RUN}") and re.search(r"(v|\.)\d+$", n)]


def sysfs(name: str, attribute: str) -> str:
    return Path(f"/sys/class/net/{name}/{attribute}").read_text().strip()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlannode")
    (root / "network").mkdir()
    (root / "network" / "interfaces").write_text(INTERFACES)
    sh("ip", "link", "add", PORT, "type", "veth", "peer", "name", FAR)
    try:
        for end in (PORT, FAR):
            Path(f"/proc/sys/net/ipv6/conf/{end}/disable_ipv6").write_text("1")
        sh("ip", "link", "set", FAR, "up")
        yield net.NodeNetwork(root)
    finally:
        for name in [*made(), PARENT, PORTED, LONG, PORT]:
            subprocess.run(["ip", "link", "del", name], capture_output=True)
        netlink.close_cached()


def test_tags_separate_containers_on_a_plain_bridge_and_move_live(node, spaces):
    _, ten, _ = plug(node, spaces, f"name=eth0,bridge={PARENT},ip={ip(111)}/24,tag=10")
    ctid_b, also_ten, nics_b = plug(node, spaces, f"name=eth0,bridge={PARENT},ip={ip(112)}/24,tag=10")
    ctid_c, twenty, nics_c = plug(node, spaces, f"name=eth0,bridge={PARENT},ip={ip(113)}/24,tag=20")
    _, plain, _ = plug(node, spaces, f"name=eth0,bridge={PARENT},ip={ip(114)}/24")
    assert ten.ping(ip(112))
    assert not ten.ping(ip(113))
    assert not plain.ping(ip(111)) and not plain.ping(ip(113))
    v10 = f"{PARENT}v10"
    side = net.host_side(ctid_b, 0)
    assert side["bridge"] == v10 and side["mtu"] == 1400
    assert sysfs(v10, "mtu") == "1400" and int(sysfs(v10, "flags"), 16) & 1
    assert sysfs(v10, "ifalias") == f"caisson: VLAN 10 of {PARENT}"
    assert sorted(made()) == [v10, f"{PARENT}v20"]

    # tag 20's only container joins tag 10: no restart, and its bridge goes
    moved = nic(0, f"name=eth0,bridge={PARENT},ip={ip(113)}/24,tag=10")
    net.hotplug(ctid_c, twenty.pid, nics_c[0], moved, node)
    assert twenty.ping(ip(111)) and made() == [v10]
    # another drops its tag: on the parent with the untagged one, away from tag 10
    net.hotplug(ctid_b, also_ten.pid, nics_b[0], nic(0, f"name=eth0,bridge={PARENT},ip={ip(112)}/24"), node)
    assert also_ten.ping(ip(114)) and net.host_side(ctid_b, 0)["bridge"] == PARENT
    assert not also_ten.ping(ip(111))
    assert also_ten.proc.poll() is None and twenty.proc.poll() is None

    # the last ones leave: stopped containers leave no per-tag bridge
    for space in (ten, twenty):
        space.close()
    net.teardown_nics(ctid_c, [moved])
    assert made() == [] and Path(f"/sys/class/net/{PARENT}").exists()


@pytest.mark.skipif(not shutil.which("nft"), reason="no nft command")
def test_the_firewall_follows_the_veth_onto_the_per_tag_bridge(node, spaces):
    ctid, guarded, nics = plug(node, spaces, f"name=eth0,bridge={PARENT},ip={ip(131)}/24,tag=30,firewall=1")
    _, peer, _ = plug(node, spaces, f"name=eth0,bridge={PARENT},ip={ip(132)}/24,tag=30")
    mac = net.generate_mac(ctid, 0)
    port = firewall.Port(f"veth{ctid}i0", mac, [f"{ip(131)}/24"])
    try:
        firewall.apply(ctid, [port], firewall.FirewallPolicy(True, "DROP"))
        assert not peer.ping(ip(131))
        assert guarded.ping(ip(132))  # its own requests go out, their replies come back
        firewall.apply(ctid, [port], firewall.FirewallPolicy(True, "ACCEPT"))
        assert peer.ping(ip(131))
    finally:
        firewall.remove(ctid)


def test_the_engine_removes_what_a_crash_left_and_never_what_it_did_not_make(node, spaces):
    leftover, foreign = f"{PARENT}v40", f"{PARENT}v41"
    with vlanbridge.locked(), Reverter() as revert:  # a start that died after making the bridge
        vlanbridge.ensure(nic(0, f"name=eth0,bridge={PARENT},tag=40"), node.ensure_bridge(PARENT), node, revert)
        revert.success()
    sh("ip", "link", "add", foreign, "type", "bridge")
    try:
        sh("ip", "link", "set", foreign, "up")
        assert sorted(made()) == [leftover, foreign]
        ctid, space, nics = plug(node, spaces, f"name=eth0,bridge={PARENT},ip={ip(141)}/24,tag=41")
        assert net.host_side(ctid, 0)["bridge"] == foreign  # used as it is
        assert made() == [foreign]  # the start swept the empty one the engine had made
        net.hotplug(ctid, space.pid, nics[0], None, node)  # hot-unplug: the administrator's bridge stays
        assert made() == [foreign] and not Path(f"/sys/class/net/{foreign}/ifalias").read_text().strip()
        added = nic(1, f"name=eth1,bridge={PARENT},ip={ip(142)}/24,tag=42")
        net.hotplug(ctid, space.pid, None, added, node)  # hot-plug makes one ...
        assert sorted(made()) == [foreign, f"{PARENT}v42"]
        net.hotplug(ctid, space.pid, added, None, node)  # ... and hot-unplug removes it
        assert made() == [foreign]
    finally:
        subprocess.run(["ip", "link", "del", foreign], capture_output=True)


def test_bad_tags_are_refused_at_start_and_nothing_is_left(node, spaces):
    ctid, space = spaces()
    for value, message in (
        (
            f"name=eth0,bridge={LONG},tag=100",
            f"net1: tag=100 on bridge '{LONG}' .* '{LONG}v100', longer than the 15 characters",
        ),
        (f"name=eth0,bridge={PARENT},tag=10,ip=dhcp", f"net1: ip=dhcp with tag=10 on bridge '{PARENT}'"),
        (f"name=eth0,bridge={PARENT},tag=10,trunks=11", f"net1: trunks need a VLAN-aware bridge; '{PARENT}'"),
    ):
        with pytest.raises(ValidationError, match=message):
            net.prepare_nics(ctid, [nic(0, f"name=eth1,bridge={PARENT},tag=12"), nic(1, value)], node)(space.pid)
    with pytest.raises(ValidationError, match=f"'{LONG}v100', longer"):
        net.hotplug(ctid, space.pid, None, nic(0, f"name=eth0,bridge={LONG},tag=100"), node)
    for value in ("name=eth0,tag=0", "name=eth0,tag=4095"):
        with pytest.raises(ValidationError, match="net0.tag: .* outside 1..4094"):
            nic(0, value)
    assert f"veth{ctid}i" not in host_links() and made() == []  # net0's bridge went with the failed start


# ---- a bridge with a port: VLAN devices ------------------------------------------------------
@pytest.mark.skipif(VLAN_DEVICES, reason="this kernel has 802.1Q VLAN devices")
def test_without_vlan_devices_a_tag_on_a_bridge_with_ports_is_refused_by_name(node, spaces):
    ctid, space = spaces()
    step = net.prepare_nics(ctid, [nic(0, f"name=eth0,bridge={PORTED},tag=10")], node)
    with pytest.raises(
        NotSupported,
        match=f"net0: tag=10 on bridge '{PORTED}' needs a VLAN device '{PORT}.10'.*"
        r"\(CONFIG_VLAN_8021Q\)",
    ):
        step(space.pid)
    assert f"veth{ctid}i" not in host_links() and made() == []


def _capture(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((ifname, 0))
    sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    sock.setblocking(False)
    return sock


def _frames(sock: socket.socket, seconds: float = 2.0) -> list[tuple[str, int | None]]:
    """(source MAC, VLAN ID or None) of the frames the socket received: the kernel takes the 802.1Q header
    off and reports it beside the frame (PACKET_AUXDATA)."""
    seen, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data, ancillary, _, address = sock.recvmsg(65536, socket.CMSG_SPACE(32))
        except BlockingIOError:
            time.sleep(0.02)
            continue
        if address[2] == PACKET_OUTGOING:
            continue
        vid = None
        for level, kind, payload in ancillary:
            if level == SOL_PACKET and kind == PACKET_AUXDATA:
                status, _, _, _, _, tci, _ = struct.unpack_from("=IIIHHHH", payload)
                vid = tci & 0xFFF if status & TP_STATUS_VLAN_VALID else None
        if vid is None and data[12:14] == b"\x81\x00":  # a tag left in the frame
            vid = int.from_bytes(data[14:16], "big") & 0xFFF
        seen.append((data[6:12].hex(":").upper(), vid))
    return seen


@pytest.mark.skipif(not VLAN_DEVICES, reason="this kernel has no 802.1Q VLAN devices (CONFIG_VLAN_8021Q)")
def test_a_tagged_container_s_frames_leave_through_the_port_with_its_tag(node, spaces):
    sock = _capture(FAR)
    try:
        ctid, ten, _ = plug(node, spaces, f"name=eth0,bridge={PORTED},ip={ip(121)}/24,tag=10")
        plain_id, plain, _ = plug(node, spaces, f"name=eth0,bridge={PORTED},ip={ip(122)}/24")
        v10, device = f"{PORTED}v10", f"{PORT}.10"
        assert sysfs(device, "ifalias") == f"caisson: VLAN port of {v10}"
        assert Path(f"/sys/class/net/{device}/master").resolve().name == v10
        ten.ping(ip(125))  # nobody has it: ARP requests flood out through the port
        plain.ping(ip(126))
        seen = _frames(sock)
    finally:
        sock.close()
    assert (net.generate_mac(ctid, 0), 10) in seen
    assert (net.generate_mac(plain_id, 0), None) in seen
    assert not any(mac == net.generate_mac(ctid, 0) and vid != 10 for mac, vid in seen)
    # a VLAN device of that name the engine did not make is not taken
    sh("ip", "link", "add", "link", PORT, "name", f"{PORT}.20", "type", "vlan", "id", "20")
    try:
        other, space = spaces()
        with pytest.raises(ValidationError, match=f"'{PORT}.20', which the host already has"):
            net.prepare_nics(other, [nic(0, f"name=eth0,bridge={PORTED},tag=20")], node)(space.pid)
        assert f"{PORTED}v20" not in made()
    finally:
        subprocess.run(["ip", "link", "del", f"{PORT}.20"], capture_output=True)
    for space in (ten, plain):
        space.close()
    net.teardown_nics(ctid, [])
    assert made() == [] and Path(f"/sys/class/net/{PORT}/master").resolve().name == PORTED
