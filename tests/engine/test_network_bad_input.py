"""Bad network input is refused with an error naming the field, before anything is written or plugged.

These tests need no kernel state: bridges are defined in a node file and
not created (``validate`` accepts a bridge that is defined or present).
"""

from __future__ import annotations

import ipaddress

import pytest

from engine import network as net
from engine.config import ContainerConfig, read_config, write_config
from engine.errors import ValidationError
from engine.network.ifupdown import parse_interfaces
from engine.network.nat import nat_ruleset

INTERFACES = """
# a copy of a Proxmox file works: non-bridge stanzas are skipped
auto lo
iface lo inet loopback

iface eth0 inet manual

auto vmbr0
iface vmbr0 inet static
    address 10.213.0.1/24
    bridge-ports none
    bridge-stp off
    bridge-fd 0
    caisson-pool 10.213.0.100-10.213.0.102

auto vmbr1
iface vmbr1 inet manual
    bridge_ports none
    bridge-vlan-aware yes
    bridge-vids 2-4094
    mtu 1500
"""


@pytest.fixture
def node(tmp_path):
    (tmp_path / "network").mkdir()
    (tmp_path / "network" / "interfaces").write_text(INTERFACES)
    return net.NodeNetwork(tmp_path)


def refused(value: str, index: int = 0) -> str:
    with pytest.raises(ValidationError) as info:
        net.parse_nic(index, value)
    assert info.value.key == f"net{index}"
    return str(info.value)


@pytest.mark.parametrize(
    "value, message",
    [
        ("name=eth0,ip=10.0.0.1/33", "net0.ip: '10.0.0.1/33' is not a valid IPv4 CIDR"),
        ("name=eth0,ip=10.0.0.1", "net0.ip: '10.0.0.1' needs a prefix length"),
        ("name=eth0,ip=fd00::1/64", "is not an IPv4 address"),
        ("name=eth0,ip=10.0.0.0/24", "network's own or broadcast address"),
        ("name=eth0,ip6=fd00::1/129", "net0.ip6: 'fd00::1/129' is not a valid IPv6 CIDR"),
        ("name=eth0,ip=10.0.0.2/24,gw=10.0.0.2", "is the interface's own address"),
        ("name=eth0,ip=dhcp,gw=10.0.0.1", "net0.gw: a gateway needs a static address in 'ip' (got dhcp)"),
        ("name=eth0,ip=10.0.0.2/24,gw=nonsense", "net0.gw: 'nonsense' is not an IP address"),
        ("name=eth0/1", "net0.name: 'eth0/1' is not a usable interface name"),
        ("name=averyveryverylongname", "is not a usable interface name"),
        ("name=eth0,trunks=10;5000", "net0.trunks: '5000' is not a VLAN range"),
        ("name=eth0,trunks=10,20", "not of the form name=value"),
        ("name=eth0,rate=5000", "net0.rate: 5000 MB/s is above"),
        ("name=eth0,mtu=64", "net0.mtu: 64 is below 68"),
        ("name=eth0,bridge=vmbr0,foo=1", "net0: unknown property 'foo'"),
        ("name=eth0,hwaddr=01:00:5E:00:00:01", "is a multicast address"),
        ("bridge=vmbr0", "the property 'name'"),
    ],
)
def test_bad_values_are_refused_naming_the_field(value, message):
    assert message in refused(value)


def test_net10_and_unknown_options_are_refused_by_the_config_schema():
    config = ContainerConfig(100)
    with pytest.raises(ValidationError) as info:
        config.set("net10", "name=eth0")
    assert info.value.key == "net10"
    with pytest.raises(ValidationError, match="net9: unknown property 'speed'"):
        config.set("net9", "name=eth0,speed=10")
    assert "net9" not in config.current.values and "net10" not in config.current.values


def test_a_parsed_nic_renders_back_to_an_equal_value():
    value = (
        "name=eth0,bridge=vmbr1,firewall=1,gw=10.0.0.1,gw6=fe80::1,hwaddr=BC:24:11:00:00:05,ip=10.0.0.2/24,"
        "ip6=fd00::2/64,link_down=1,mtu=1400,rate=1.5,tag=10,trunks=20;30-40,type=veth"
    )
    nic = net.parse_nic(3, value)
    assert nic.to_value() == value and net.parse_nic(3, nic.to_value()) == nic
    assert nic.trunk_vids()[:3] == [20, 30, 31] and nic.key == "net3"
    assert net.parse_nic(0, "name=eth0,rate=0").rate is None


def test_generated_macs_are_stable_unicast_and_distinct():
    assert net.generate_mac(100, 0) == net.generate_mac(100, 0) == "BC:24:11:00:03:E8"
    macs = {net.generate_mac(ctid, i) for ctid in range(100, 1100) for i in range(10)}
    assert len(macs) == 10_000 and all(int(m[:2], 16) & 1 == 0 for m in macs)
    assert net.generate_mac(999_999_999, 9).startswith("BC:24:11:")


def test_missing_bridge_is_refused_naming_interface_and_bridge(node):
    nics = [net.parse_nic(0, "name=eth0,bridge=vmbr0"), net.parse_nic(1, "name=eth1,bridge=vmbr7")]
    with pytest.raises(ValidationError, match="net1: bridge 'vmbr7' does not exist") as info:
        net.validate(100, nics, node, {})
    assert info.value.key == "net1"


def test_a_tag_on_a_bridge_that_is_not_vlan_aware_is_accepted_but_trunks_dhcp_and_pool_are_not(node):
    net.validate(100, [net.parse_nic(0, "name=eth0,bridge=vmbr1,tag=10,trunks=20")], node, {})
    net.validate(100, [net.parse_nic(0, "name=eth0,bridge=vmbr0,tag=10,ip=10.213.0.5/24")], node, {})
    with pytest.raises(ValidationError, match="net0: trunks need a VLAN-aware bridge; 'vmbr0' is not"):
        net.validate(100, [net.parse_nic(0, "name=eth0,bridge=vmbr0,tag=10,trunks=20")], node, {})
    with pytest.raises(ValidationError, match="net0: ip=dhcp with tag=10 on bridge 'vmbr0' .*untagged bridge only"):
        net.validate(100, [net.parse_nic(0, "name=eth0,bridge=vmbr0,tag=10,ip=dhcp")], node, {})
    with pytest.raises(ValidationError, match="net0: ip=pool with tag=10 on bridge 'vmbr0'") as info:
        net.resolve(100, [net.parse_nic(0, "name=eth0,bridge=vmbr0,tag=10,ip=pool")], node, {})
    assert info.value.key == "net0"


@pytest.mark.parametrize(
    "value", ["name=eth0,tag=0", "name=eth0,tag=4095", {"name": "eth0", "tag": 0}, {"name": "eth0", "tag": 4095}]
)
def test_a_tag_outside_1_to_4094_is_refused(value):
    assert "net0.tag: " in refused(value) and "4094" in refused(value)


def test_a_per_tag_bridge_or_vlan_device_name_that_does_not_fit_is_refused(tmp_path):
    (tmp_path / "network").mkdir()
    (tmp_path / "network" / "interfaces").write_text(
        "iface vmbrlongname1 inet manual\n bridge-ports none\n\niface vmbr2 inet manual\n bridge-ports enp0s31f6long\n"
    )
    node = net.NodeNetwork(tmp_path)
    net.validate(100, [net.parse_nic(0, "name=eth0,bridge=vmbrlongname1,tag=9")], node, {})
    with pytest.raises(
        ValidationError,
        match="net0: tag=10 on bridge 'vmbrlongname1' .* needs a bridge "
        "'vmbrlongname1v10', longer than the 15 characters",
    ):
        net.validate(100, [net.parse_nic(0, "name=eth0,bridge=vmbrlongname1,tag=10")], node, {})
    with pytest.raises(
        ValidationError,
        match="net1: tag=100 on bridge 'vmbr2' needs a VLAN device "
        "'enp0s31f6long.100' on its port 'enp0s31f6long', longer than",
    ):
        net.validate(100, [net.parse_nic(1, "name=eth1,bridge=vmbr2,tag=100")], node, {})


def test_mtu_above_the_bridge_and_duplicate_names_are_refused(node):
    with pytest.raises(ValidationError, match="net0: mtu 9000 is above the MTU 1500 of bridge 'vmbr1'"):
        net.validate(100, [net.parse_nic(0, "name=eth0,bridge=vmbr1,mtu=9000")], node, {})
    with pytest.raises(ValidationError, match="net2: interface name 'eth0' is already used by net0"):
        net.validate(100, [net.parse_nic(0, "name=eth0"), net.parse_nic(2, "name=eth0")], node, {})


def test_an_address_another_container_holds_on_the_bridge_is_refused_naming_it(node):
    others = {
        101: [net.parse_nic(0, "name=eth0,bridge=vmbr0,ip=10.213.0.5/24")],
        102: [net.parse_nic(0, "name=eth0,bridge=vmbr1,ip=10.213.0.6/24")],
    }
    with pytest.raises(
        ValidationError,
        match=r"net1: address 10.213.0.5 on bridge 'vmbr0' is already used by "
        r"container 101 \(net0\)",
    ) as info:
        net.validate(100, [net.parse_nic(1, "name=eth1,bridge=vmbr0,ip=10.213.0.5/24")], node, others)
    assert info.value.key == "net1"
    # the same address on another bridge is another network; the container's own old config is no collision
    net.validate(100, [net.parse_nic(0, "name=eth0,bridge=vmbr0,ip=10.213.0.6/24")], node, others)
    net.validate(101, [net.parse_nic(0, "name=eth0,bridge=vmbr0,ip=10.213.0.5/24")], node, others)
    with pytest.raises(ValidationError, match="is the bridge 'vmbr0''s own address"):
        net.validate(100, [net.parse_nic(0, "name=eth0,bridge=vmbr0,ip=10.213.0.1/24")], node, others)
    twice = [
        net.parse_nic(0, "name=eth0,bridge=vmbr0,ip=10.213.0.9/24"),
        net.parse_nic(1, "name=eth1,bridge=vmbr0,ip=10.213.0.9/24"),
    ]
    with pytest.raises(ValidationError, match="already used by net0 of this container"):
        net.validate(100, twice, node, others)
    clash = {101: [net.parse_nic(0, "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01")]}
    with pytest.raises(ValidationError, match="MAC BC:24:11:00:00:01 on bridge 'vmbr0' is already used by container"):
        net.validate(100, [net.parse_nic(0, "name=eth0,bridge=vmbr0,hwaddr=bc:24:11:00:00:01")], node, clash)


def test_the_pool_hands_out_unique_addresses_until_it_is_empty(node):
    others: dict[int, list[net.Nic]] = {101: [net.parse_nic(0, "name=eth0,bridge=vmbr0,ip=10.213.0.101/24")]}
    got = []
    for ctid in (200, 201):
        nics = net.resolve(ctid, [net.parse_nic(0, "name=eth0,bridge=vmbr0,ip=pool")], node, others)
        net.validate(ctid, nics, node, others)
        others[ctid] = nics
        got.append(nics[0])
    assert [n.ip for n in got] == ["10.213.0.100/24", "10.213.0.102/24"]
    assert all(n.gw == "10.213.0.1" and n.hwaddr for n in got)
    with pytest.raises(ValidationError, match="net0: bridge 'vmbr0': every address of the pool .* is taken"):
        net.resolve(202, [net.parse_nic(0, "name=eth0,bridge=vmbr0,ip=pool")], node, others)
    with pytest.raises(ValidationError, match="net0: ip=pool must be resolved"):
        net.validate(202, [net.parse_nic(0, "name=eth0,bridge=vmbr0,ip=pool")], node, others)
    with pytest.raises(ValidationError, match="net0: bridge 'vmbr1' has no address pool"):
        net.resolve(202, [net.parse_nic(0, "name=eth0,bridge=vmbr1,ip=pool")], node, others)
    two = net.resolve(
        203,
        [net.parse_nic(0, "name=eth0,bridge=vmbr0,ip=pool"), net.parse_nic(1, "name=eth1,bridge=vmbr0,ip=pool")],
        node,
        {},
    )
    assert len({n.ip for n in two}) == 2


def test_a_refused_change_leaves_the_config_file_as_it_was(tmp_path, node):
    """The order the integration follows: parse, resolve, validate, and only then write."""
    path = tmp_path / "100.conf"
    config = ContainerConfig(100)
    config.set("net0", "name=eth0,bridge=vmbr0,ip=10.213.0.7/24")
    write_config(path, config)
    before = path.read_bytes()
    for value in ("name=eth0,bridge=vmbr7", "name=eth0,bridge=vmbr0,ip=10.213.0.5/24", "name=eth0,ip=1.2.3.4/33"):
        edited = read_config(path, 100)
        with pytest.raises(ValidationError) as info:
            edited.set("net0", value)
            nics = net.resolve(100, [net.parse_nic(0, value)], node, {})
            net.validate(100, nics, node, {101: [net.parse_nic(0, "name=eth0,bridge=vmbr0,ip=10.213.0.5/24")]})
            write_config(path, edited)
        assert info.value.key == "net0"
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "text, message",
    [
        ("iface vmbr0 inet static\n bridge-ports none\n post-up iptables -F\n", "option 'post-up' is not supported"),
        (
            "iface vmbr0 inet static\n address 10.0.0.1/24\n bridge-ports none\n caisson-pool 10.0.1.1-10.0.1.9\n",
            "the range must be ascending and inside 10.0.0.0/24",
        ),
        (
            "iface vmbr0 inet manual\n bridge-ports none\n caisson-pool 10.0.0.2-10.0.0.9\n",
            "a range needs the bridge's",
        ),
        ("iface vmbr0 inet static\n address 10.0.0.1/33\n bridge-ports none\n", "line 2 (vmbr0): address"),
        ("iface vmbr0 inet manual\n bridge-ports none\n caisson-nat maybe\n", "'maybe' is not yes or no"),
        ("address 10.0.0.1/24\n", "line 1: option 'address' outside an iface stanza"),
        ("source /etc/network/interfaces.d/*\n", "'source' is not supported"),
    ],
)
def test_bad_interfaces_files_are_refused_naming_the_line(text, message):
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_interfaces(text, "interfaces")


def test_interfaces_file_defaults_and_nat_ruleset(node):
    bridges = node.bridges()
    assert set(bridges) == {"vmbr0", "vmbr1"}  # lo and eth0 are the host's, not Caisson's
    assert bridges["vmbr0"].address == ipaddress.IPv4Interface("10.213.0.1/24") and not bridges["vmbr0"].nat
    assert bridges["vmbr1"].vlan_aware and bridges["vmbr1"].vids == "2-4094" and bridges["vmbr1"].ports == []
    rules = nat_ruleset(bridges["vmbr0"])
    assert 'ip saddr 10.213.0.0/24 ip daddr != 10.213.0.0/24 oifname != "vmbr0" masquerade' in rules
    with pytest.raises(ValidationError, match="caisson-nat needs an IPv4 address"):
        nat_ruleset(bridges["vmbr1"])


def test_a_gateway_outside_the_subnet_is_accepted_as_proxmox_does():
    """A routed /32 with the provider's gateway (Hetzner, OVH): reached by an on-link route."""
    assert net.parse_nic(0, "name=eth0,ip=10.0.0.100/32,gw=11.0.0.1").gw == "11.0.0.1"
    assert net.parse_nic(0, "name=eth0,ip6=fc00::1/64,gw6=fc00:1::ff").gw6 == "fc00:1::ff"
