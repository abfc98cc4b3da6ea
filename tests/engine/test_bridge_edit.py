"""Editing the node's bridges (the Network panel's engine side): one stanza rewritten, the host brought to it."""

from __future__ import annotations

import ipaddress
import os
import subprocess
from pathlib import Path

import pytest

from engine.errors import AlreadyExists, NotFound, NotSupported, ValidationError
from engine.network.bridge_edit import bridge_from_fields, delete_bridge, render_stanza, replace_stanza, set_bridge
from engine.network.default import free_subnet
from engine.network.ifupdown import parse_interfaces

RUN = os.getpid() % 100000
SYS = Path("/sys/class/net")
HAND_WRITTEN = """# the administrator's own notes
auto lo
iface lo inet loopback

auto other0
iface other0 inet manual
    bridge-ports none
    # a comment inside another stanza stays
"""


def _addresses(name: str) -> str:
    return subprocess.run(["ip", "-o", "addr", "show", "dev", name], capture_output=True, text=True).stdout


@pytest.fixture
def subnet() -> ipaddress.IPv4Network:
    return free_subnet()


def test_fields_render_and_read_back(subnet):
    host = list(subnet.hosts())
    fields = {
        "address": f"{host[0]}/24",
        "address6": "fd00:77::1/64",
        "vlan_aware": True,
        "vids": "10 20-30",
        "mtu": 1400,
        "pool": f"{host[9]}-{host[19]}",
        "dhcp": f"{host[99]}-{host[109]}",
        "nat": True,
    }
    bridge = bridge_from_fields("vmbr9", fields)
    back = parse_interfaces(render_stanza(bridge))["vmbr9"]
    assert back == bridge


def test_replace_keeps_everything_else():
    stanza = render_stanza(bridge_from_fields("vmbr9", {"address": "10.9.0.1/24"}))
    text = replace_stanza(HAND_WRITTEN, "vmbr9", stanza)
    assert text.startswith(HAND_WRITTEN.rstrip("\n")) and "iface vmbr9 inet static" in text
    assert set(parse_interfaces(text)) == {"other0", "vmbr9"}
    changed = replace_stanza(text, "vmbr9", render_stanza(bridge_from_fields("vmbr9", {"address": "10.9.1.1/24"})))
    assert "10.9.0.1" not in changed and changed.count("iface vmbr9") == 1
    assert replace_stanza(changed, "vmbr9", None) == HAND_WRITTEN


@pytest.mark.parametrize(
    ("name", "fields", "key"),
    [
        ("1bad", {}, "name"),
        ("veth5", {}, "name"),
        ("a" * 16, {}, "name"),
        ("vmbr9", {"address": "10.0.0.1"}, "address"),
        ("vmbr9", {"address": "10.0.0.0/24"}, "address"),
        ("vmbr9", {"address": "300.0.0.1/24"}, "address"),
        ("vmbr9", {"address6": "fd00::1"}, "address6"),
        ("vmbr9", {"ports": "eth0 eth0"}, "ports"),
        ("vmbr9", {"ports": ["vmbr9"]}, "ports"),
        ("vmbr9", {"vids": "2-4094"}, "vids"),
        ("vmbr9", {"vlan_aware": True, "vids": "0-5000"}, "vids"),
        ("vmbr9", {"vlan_aware": "maybe"}, "vlan_aware"),
        ("vmbr9", {"mtu": 100}, "mtu"),
        ("vmbr9", {"mtu": "big"}, "mtu"),
        ("vmbr9", {"pool": "10.0.0.10-10.0.0.20"}, "pool"),
        ("vmbr9", {"address": "10.0.0.1/24", "pool": "10.0.1.10-10.0.1.20"}, "pool"),
        ("vmbr9", {"address": "10.0.0.1/24", "pool": "10.0.0.20-10.0.0.10"}, "pool"),
        ("vmbr9", {"address": "10.0.0.1/24", "dhcp": "10.0.0.1-10.0.0.9"}, "dhcp"),
        ("vmbr9", {"address": "10.0.0.1/24", "dhcp": "10.0.0.5"}, "dhcp"),
        ("vmbr9", {"address": "10.0.0.1/24", "pool": "10.0.0.5-10.0.0.50", "dhcp": "10.0.0.40-10.0.0.60"}, "dhcp"),
        ("vmbr9", {"nat": True}, "nat"),
        ("vmbr9", {"post-up": "rm -rf /"}, "post-up"),
    ],
)
def test_each_bad_field_is_named(name, fields, key):
    with pytest.raises(ValidationError) as refused:
        bridge_from_fields(name, fields)
    assert refused.value.key == key, str(refused.value)


def test_create_edit_delete_on_the_host(tmp_path, subnet):
    name = f"cbe{RUN}"
    host = [str(h) for h in subnet.hosts()]
    root = tmp_path
    (root / "network").mkdir()
    (root / "network" / "interfaces").write_text(HAND_WRITTEN)
    try:
        set_bridge(root, bridge_from_fields(name, {"address": f"{host[0]}/24", "pool": f"{host[9]}-{host[19]}"}), True)
        assert (SYS / name / "bridge").is_dir() and f"{host[0]}/24" in _addresses(name)
        with pytest.raises(AlreadyExists):
            set_bridge(root, bridge_from_fields(name, {}), True)

        new = f"{host[1]}/24"
        before = (root / "network" / "interfaces").read_text()
        if (SYS / name / "bridge" / "vlan_filtering").exists():
            set_bridge(root, bridge_from_fields(name, {"address": new, "vlan_aware": True}), False)
            assert (SYS / name / "bridge" / "vlan_filtering").read_text().strip() == "1"
            assert "bridge-vlan-aware yes" in (root / "network" / "interfaces").read_text()
        else:  # a kernel without VLAN filtering refuses, and the failed edit leaves the bridge as it was
            with pytest.raises(NotSupported, match="VLAN filtering"):
                set_bridge(root, bridge_from_fields(name, {"address": new, "vlan_aware": True}), False)
            assert (root / "network" / "interfaces").read_text() == before
            assert f"{host[0]}/24" in _addresses(name) and new not in _addresses(name)
            set_bridge(root, bridge_from_fields(name, {"address": new}), False)
        assert new in _addresses(name) and f"{host[0]}/" not in _addresses(name)
        assert "# a comment inside another stanza stays" in (root / "network" / "interfaces").read_text()

        with pytest.raises(ValidationError, match="used by CT 101"):
            delete_bridge(root, name, [101])
        assert (SYS / name).exists()
        delete_bridge(root, name, [])
        assert not (SYS / name).exists()
        assert (root / "network" / "interfaces").read_text() == HAND_WRITTEN
        with pytest.raises(NotFound):
            delete_bridge(root, name, [])
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True)


def test_a_port_that_does_not_exist_changes_nothing(tmp_path):
    name = f"cbp{RUN}"
    with pytest.raises(ValidationError, match="does not exist") as refused:
        set_bridge(tmp_path, bridge_from_fields(name, {"ports": [f"nope{RUN}"]}), True)
    assert refused.value.key == "ports"
    assert not (SYS / name).exists() and not (tmp_path / "network" / "interfaces").exists()
