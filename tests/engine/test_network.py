"""Container networking against the real kernel: bridges, veths into namespaces, VLANs, rate limits, teardown.

Namespaces made by the tests stand in for containers (``network_support``); a real container is
started with the network step in ``test_network_container.py``.
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from engine import network as net
from engine.errors import EngineError, NotSupported, ValidationError
from engine.network.ifupdown import Bridge
from engine.network.nat import nat_ruleset, nat_table
from tests.engine.network_support import (  # noqa: F401 - fixtures
    BR_A,
    BR_B,
    BR_V,
    BR_X,
    GW,
    SUBNET,
    VLAN,
    host_links,
    ip,
    nic,
    node_fixture,
    plug,
    spaces_fixture,
)


# ---- reachability ----------------------------------------------------------------------------
def test_two_containers_on_one_bridge_reach_each_other_and_the_host(node, spaces):
    _, one, _ = plug(node, spaces, f"name=eth0,bridge={BR_A},ip={ip(11)}/24,gw={GW},hwaddr=BC:24:11:AA:00:01")
    ctid, two, nics = plug(node, spaces, f"name=eth0,bridge={BR_A},ip={ip(12)}/24")
    assert one.ping(ip(12)) and two.ping(ip(11)) and one.ping(GW)
    assert "default via " + GW in one.run("ip", "route").stdout
    seen = {i["name"]: i for i in net.interfaces(one.pid)}
    assert seen["eth0"]["mac"] == "BC:24:11:AA:00:01" and seen["eth0"]["ipv4"] == [f"{ip(11)}/24"]
    assert seen["eth0"]["state"] == "up" and seen["eth0"]["rx_packets"] > 0 and seen["lo"]["state"] == "unknown"
    side = net.host_side(ctid, 0)
    assert side["bridge"] == BR_A and side["up"] and side["rate"] == {"ingress": None, "egress": None}
    inside = {i["name"]: i for i in net.interfaces(two.pid)}
    assert inside["eth0"]["mac"] == net.generate_mac(ctid, 0)


def test_separate_bridges_do_not_reach_each_other(node, spaces):
    _, on_a, _ = plug(node, spaces, f"name=eth0,bridge={BR_A},ip={ip(21)}/24")
    _, on_b, _ = plug(node, spaces, f"name=eth0,bridge={BR_B},ip={ip(22)}/24")
    _, also_b, _ = plug(node, spaces, f"name=eth0,bridge={BR_B},ip={ip(23)}/24")
    assert also_b.ping(ip(22))  # bridge b works ...
    assert not on_a.ping(ip(22))  # ... and does not reach bridge a, though the subnet is the same


def _vlan_node(tmp_path, aware: bool = True):
    (tmp_path / "network").mkdir()
    vlan = " bridge-vlan-aware yes\n bridge-vids 2-4094\n" if aware else ""
    (tmp_path / "network" / "interfaces").write_text(f"iface {BR_V} inet manual\n bridge-ports none\n{vlan}")
    return net.NodeNetwork(tmp_path)


@pytest.fixture
def vlan_node(tmp_path):
    """A node whose one bridge is VLAN-aware; the bridge is removed even if the test fails."""
    try:
        yield _vlan_node(tmp_path)
    finally:
        subprocess.run(["ip", "link", "del", BR_V], capture_output=True)


@pytest.fixture(
    params=[
        pytest.param(False, id="per-tag-bridges"),
        pytest.param(
            True,
            id="vlan-aware",
            marks=pytest.mark.skipif(
                not VLAN, reason="this kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING)"
            ),
        ),
    ]
)
def tag_node(request, tmp_path):
    """A node whose one bridge is VLAN-aware or not (tags then go on per-tag bridges ``<bridge>v<N>``)."""
    try:
        yield _vlan_node(tmp_path, request.param)
    finally:
        subprocess.run(["ip", "link", "del", BR_V], capture_output=True)


def test_vlan_tag_separates_and_the_same_tag_connects(tag_node, spaces):
    aware = tag_node.bridge(BR_V).vlan_aware
    tag_node.ensure_bridges()
    trunks = ",trunks=100;200-201" if aware else ""
    _, ten, _ = plug(tag_node, spaces, f"name=eth0,bridge={BR_V},ip={ip(31)}/24,tag=10")
    _, twenty, _ = plug(tag_node, spaces, f"name=eth0,bridge={BR_V},ip={ip(32)}/24,tag=20")
    ctid, other, nics = plug(tag_node, spaces, f"name=eth0,bridge={BR_V},ip={ip(33)}/24,tag=10{trunks}")
    assert ten.ping(ip(33))
    assert not ten.ping(ip(32))
    if aware:
        vlans = subprocess.run(
            ["bridge", "-j", "vlan", "show", "dev", f"veth{ctid}i0"], capture_output=True, text=True
        ).stdout
        assert '"vlan":10' in vlans.replace(" ", "") and '"vlan":100' in vlans.replace(" ", "")
    else:
        assert net.host_side(ctid, 0)["bridge"] == f"{BR_V}v10"
    net.hotplug(ctid, other.pid, nics[0], nic(0, f"name=eth0,bridge={BR_V},ip={ip(33)}/24,tag=20"), tag_node)
    assert twenty.ping(ip(33)) and not ten.ping(ip(33))


@pytest.mark.skipif(VLAN, reason="this kernel has bridge VLAN filtering")
def test_vlan_aware_bridge_without_kernel_support_is_refused_by_name(vlan_node):
    with pytest.raises(NotSupported, match=f"bridge '{BR_V}'.*VLAN filtering"):
        vlan_node.ensure_bridges()


def test_trunks_on_a_bridge_that_is_not_vlan_aware_are_refused_and_nothing_is_left(node, spaces):
    ctid, space = spaces()
    step = net.prepare_nics(
        ctid,
        [nic(0, f"name=eth0,bridge={BR_A},ip={ip(41)}/24,tag=5"), nic(1, f"name=eth1,bridge={BR_A},tag=5,trunks=6")],
        node,
    )
    assert step.__name__ == "network"
    with pytest.raises(ValidationError, match=f"net1: trunks need a VLAN-aware bridge; '{BR_A}' is not"):
        step(space.pid)
    assert f"veth{ctid}i" not in host_links() and f"{BR_A}v5" not in host_links()
    assert [i["name"] for i in net.interfaces(space.pid)] == ["lo"]


def test_a_missing_bridge_fails_the_start_step_naming_the_interface_and_reverts(node, spaces):
    ctid, space = spaces()
    step = net.prepare_nics(ctid, [nic(0, f"name=eth0,bridge={BR_A},rate=5"), nic(1, "name=eth1,bridge=vmbr7")], node)
    with pytest.raises(EngineError, match="net1: bridge 'vmbr7' does not exist"):
        step(space.pid)
    assert f"veth{ctid}i" not in host_links() and f"ifb{ctid}i" not in host_links()


# ---- rate limits, IPv6, teardown -------------------------------------------------------------
def _receive(sock: socket.socket, result: list) -> None:
    conn, _ = sock.accept()
    total, start = 0, None
    while data := conn.recv(65536):
        start = start or time.monotonic()
        total += len(data)
    result.append((total, time.monotonic() - (start or time.monotonic())))
    conn.close()


SENDER = """import socket, sys, time
for _ in range(200):
    try:
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
        break
    except OSError:
        time.sleep(0.01)
s.sendall(b"x" * int(sys.argv[3])); s.close()
"""
RECEIVER = """import socket, sys, time
l = socket.socket(); l.bind((sys.argv[1], int(sys.argv[2]))); l.listen(); print("ready", flush=True)
c, _ = l.accept(); n, t = 0, None
while d := c.recv(65536):
    t = t or time.monotonic(); n += len(d)
print(n, time.monotonic() - t)
"""


def test_rate_limit_is_read_back_and_holds_both_ways(node, spaces):
    ctid, space, _ = plug(node, spaces, f"name=eth0,bridge={BR_A},ip={ip(81)}/24,rate=2")
    assert net.host_side(ctid, 0)["rate"] == {"ingress": 2 << 20, "egress": 2 << 20}
    size = 2 << 20
    # container -> host: shaped on the ifb
    listener = socket.create_server((GW, 0))
    got: list = []
    thread = threading.Thread(target=_receive, args=(listener, got))
    thread.start()
    space.run(sys.executable, "-c", SENDER, GW, str(listener.getsockname()[1]), str(size))
    thread.join(15)
    listener.close()
    # host -> container: shaped on the host end of the veth
    receiver = subprocess.Popen(
        ["ip", "netns", "exec", space.name, sys.executable, "-c", RECEIVER, ip(81), "5201"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert receiver.stdout.readline() == "ready\n"
    with socket.create_connection((ip(81), 5201)) as sock:
        sock.sendall(b"x" * size)
    total, seconds = receiver.communicate(timeout=15)[0].split()
    for received, elapsed in (got[0], (int(total), float(seconds))):
        assert received == size
        assert 0.5 < elapsed < 4, f"{size} bytes at 2 MB/s took {elapsed:.2f} s"


def test_ipv6_static_and_auto(node, spaces):
    prefix = f"fd00:213:{SUBNET:x}"
    ctid, space, _ = plug(
        node,
        spaces,
        f"name=eth0,bridge={BR_A},ip6={prefix}::11/64,gw6={prefix}::1",
        f"name=eth1,bridge={BR_B},ip6=auto",
    )
    seen = {i["name"]: i for i in net.interfaces(space.pid)}
    assert f"{prefix}::11/64" in seen["eth0"]["ipv6"]
    assert f"default via {prefix}::1" in space.run("ip", "-6", "route").stdout
    assert space.run("cat", "/proc/sys/net/ipv6/conf/eth1/autoconf").stdout.strip() == "1"


def test_teardown_leaves_no_veth_ifb_route_or_qdisc(node, spaces):
    ctid, space, nics = plug(
        node, spaces, f"name=eth0,bridge={BR_A},ip={ip(91)}/24,rate=1", f"name=eth1,bridge={BR_B},rate=1"
    )
    assert f"ifb{ctid}i1" in host_links()
    space.close()  # the container stops: its namespace goes, the host ends may linger
    started = time.perf_counter()
    net.teardown_nics(ctid, nics)
    assert time.perf_counter() - started < 1
    net.teardown_nics(ctid, nics)  # idempotent
    for name in (f"veth{ctid}i", f"ifb{ctid}i"):
        assert name not in host_links()
    assert (
        f"veth{ctid}"
        not in subprocess.run(["ip", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    )
    assert f"{ctid}i" not in subprocess.run(["tc", "qdisc", "show"], capture_output=True, text=True).stdout


def test_bridges_are_adopted_and_ensure_is_idempotent(node, spaces):
    node.ensure_bridges()
    assert node.bridge(BR_A).pool and node.bridge(BR_A).defined
    subprocess.run(["ip", "link", "add", BR_X, "type", "bridge"], check=True)
    adopted = node.bridge(BR_X)
    assert not adopted.defined and not adopted.vlan_aware
    plug(node, spaces, f"name=eth0,bridge={BR_X}")
    with pytest.raises(ValidationError, match="'lo' is a host interface but not a bridge"):
        node.bridge("lo")


@pytest.mark.skipif(not shutil.which("nft"), reason="no nft command")
def test_the_nat_ruleset_loads_and_unloads_in_a_private_namespace(spaces):
    """Never on the host: the script is loaded into a namespace of the test's own, twice (it is idempotent)."""
    _, space = spaces()
    bridge = Bridge(BR_A, address=ipaddress.IPv4Interface(f"{GW}/24"), nat=True)
    table = nat_table(BR_A)
    for _ in range(2):
        done = space.run("nft", "-f", "-", input=nat_ruleset(bridge))
        assert done.returncode == 0, done.stderr
    listed = space.run("nft", "list", "table", "ip", table).stdout
    assert f"ip saddr 10.213.{SUBNET}.0/24 ip daddr != 10.213.{SUBNET}.0/24" in listed and "masquerade" in listed
    assert space.run("nft", "-f", "-", input=f"table ip {table} {{}}\ndelete table ip {table}\n").returncode == 0
    assert table not in space.run("nft", "list", "tables").stdout
