"""Hot-plug against the real kernel: add, remove and change a running container's interfaces, with no restart."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from engine import network as net
from engine.errors import EngineError, ValidationError
from tests.engine.network_support import BR_A, BR_B, GW, host_links, ip, nic, node_fixture, plug, spaces_fixture  # noqa: F401 - fixtures


def test_hotplug_add_then_remove_leaves_nothing_behind(node, spaces):
    _, peer, _ = plug(node, spaces, f"name=eth0,bridge={BR_A},ip={ip(51)}/24")
    ctid, space, nics = plug(node, spaces, "name=eth0")  # not on any bridge
    added = nic(1, f"name=eth1,bridge={BR_A},ip={ip(52)}/24,rate=3")
    net.hotplug(ctid, space.pid, None, added, node)
    assert space.ping(ip(51))
    assert net.host_side(ctid, 1)["rate"]["egress"] == 3 * 1024 * 1024
    with pytest.raises(ValidationError, match="net1: the container already has this interface"):
        net.hotplug(ctid, space.pid, None, added, node)
    net.hotplug(ctid, space.pid, added, None, node)
    assert f"veth{ctid}i1" not in host_links() and f"ifb{ctid}i1" not in host_links()
    assert [i["name"] for i in net.interfaces(space.pid)] == ["lo", "eth0"]
    assert ip(52) not in subprocess.run(["ip", "route", "show", "table", "all"], capture_output=True, text=True).stdout


def test_hotplug_changes_address_rate_bridge_mtu_and_link_state_without_restart(node, spaces):
    _, peer, _ = plug(node, spaces, f"name=eth0,bridge={BR_A},ip={ip(61)}/24")
    ctid, space, nics = plug(node, spaces, f"name=eth0,bridge={BR_A},ip={ip(62)}/24,gw={GW}")
    pid_before = space.pid
    steps = [
        f"name=eth0,bridge={BR_A},ip={ip(63)}/24,gw={GW},rate=4,mtu=1400",
        f"name=eth0,bridge={BR_A},ip={ip(63)}/24,gw={GW},link_down=1",
        f"name=eth0,bridge={BR_B},ip={ip(63)}/24",
    ]
    old = nics[0]
    for value in steps:
        new = nic(0, value)
        net.hotplug(ctid, space.pid, old, new, node)
        old = new
        seen = {i["name"]: i for i in net.interfaces(space.pid)}["eth0"]
        assert seen["ipv4"] == [f"{ip(63)}/24"]
        side = net.host_side(ctid, 0)
        if "rate=4" in value:
            assert peer.ping(ip(63)) and seen["mtu"] == 1400 and side["mtu"] == 1400
            assert side["rate"] == {"ingress": 4 << 20, "egress": 4 << 20}
            assert Path(f"/sys/class/net/{BR_A}/mtu").read_text().strip() == "1500"  # the bridge keeps its MTU
        if "link_down" in value:
            assert not side["up"] and side["rate"]["ingress"] is None and not peer.ping(ip(63))
        if BR_B in value:
            assert side["bridge"] == BR_B and not peer.ping(ip(63))
            assert "default" not in space.run("ip", "route").stdout
    assert space.pid == pid_before and space.proc.poll() is None


def test_a_failed_change_leaves_the_running_interface_as_it_was(node, spaces):
    ctid, space, nics = plug(node, spaces, f"name=eth0,bridge={BR_A},ip={ip(71)}/24,gw={GW},rate=2")
    with pytest.raises(EngineError, match="net0: bridge 'vmbr7' does not exist"):
        net.hotplug(ctid, space.pid, nics[0], nic(0, f"name=eth0,bridge=vmbr7,ip={ip(72)}/24"), node)
    side = net.host_side(ctid, 0)
    assert side["bridge"] == BR_A and side["rate"]["ingress"] == 2 << 20
    assert {i["name"]: i for i in net.interfaces(space.pid)}["eth0"]["ipv4"] == [f"{ip(71)}/24"]
    assert space.ping(GW)


def test_hotplug_with_a_new_name_replugs_the_interface_or_puts_the_old_one_back(node, spaces):
    ctid, space, nics = plug(node, spaces, f"name=eth0,bridge={BR_A},ip={ip(75)}/24,rate=3")
    with pytest.raises(EngineError, match="net0: bridge 'vmbr7' does not exist"):
        net.hotplug(ctid, space.pid, nics[0], nic(0, "name=lan0,bridge=vmbr7"), node)
    assert [i["name"] for i in net.interfaces(space.pid)] == ["lo", "eth0"] and space.ping(GW)
    assert net.host_side(ctid, 0)["rate"]["egress"] == 3 << 20
    net.hotplug(ctid, space.pid, nics[0], nic(0, f"name=lan0,bridge={BR_A},ip={ip(75)}/24"), node)
    assert [i["name"] for i in net.interfaces(space.pid)] == ["lo", "lan0"] and space.ping(GW)
    assert net.host_side(ctid, 0)["rate"]["egress"] is None and f"ifb{ctid}i0" not in host_links()
