"""The node's default bridge (``python -m engine network --init-default``): vmbr0 on a free private /24."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.network import NodeNetwork
from engine.network.default import free_subnet, host_networks, init_default

REPO = Path(__file__).resolve().parents[2]
OWN = f"cstd{os.getpid() % 100000}"  # a bridge name of this test run (the host's vmbr0 is not the tests')


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine", "--root", str(root), "-o", "json", "network", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_init_default_writes_vmbr0_and_is_idempotent(tmp_path):
    if Path("/sys/class/net/vmbr0").exists():
        pytest.skip("this host has a vmbr0 of its own; the function leaves it alone (see the next test)")
    first = _cli(tmp_path, "--init-default")  # the first run also creates vmbr0 on the host: undone below
    try:
        assert first.returncode == 0, first.stderr
        made = json.loads(first.stdout)
        subnet = ipaddress.IPv4Interface(made["address"]).network
        assert made["created"] and not made["nat"] and subnet.prefixlen == 24
        text = (tmp_path / "network" / "interfaces").read_text()
        host = str(subnet.network_address)[:-1]  # "10.213.0."
        for line in (
            "auto vmbr0",
            "iface vmbr0 inet static",
            f"address {host}1/24",
            "bridge-ports none",
            f"caisson-pool {host}100-{host}199",
            f"caisson-dhcp {host}200-{host}249",
            "caisson-nat no",
        ):
            assert line in text
        assert Path("/sys/class/net/vmbr0/bridge").is_dir()
        again = _cli(tmp_path, "--init-default")
        assert again.returncode == 0 and not json.loads(again.stdout)["created"]
        assert "exists; left as it is" in json.loads(again.stdout)["reason"]
        assert (tmp_path / "network" / "interfaces").read_text() == text
    finally:
        if (tmp_path / "network" / "interfaces").exists():
            NodeNetwork(tmp_path).remove_bridge("vmbr0")


def test_an_existing_host_interface_of_that_name_is_left_alone(tmp_path):
    subprocess.run(["ip", "link", "add", OWN, "type", "bridge"], check=True)
    try:
        result = init_default(tmp_path, name=OWN)
        assert not result.created and "already has an interface" in result.reason
        assert not (tmp_path / "network" / "interfaces").exists()
    finally:
        subprocess.run(["ip", "link", "del", OWN], check=True)


def test_a_taken_subnet_moves_the_bridge_to_the_next_free_one(tmp_path):
    """The kernel here has no dummy interfaces: a bridge of the test's own holds the address instead."""
    first = free_subnet()
    taker = f"{OWN}t"
    subprocess.run(["ip", "link", "add", taker, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", f"{first.network_address + 7}/24", "dev", taker], check=True)
        assert any(net == first for net in host_networks())
        expected = free_subnet()
        result = init_default(tmp_path, name=OWN)
        try:
            chosen = ipaddress.IPv4Interface(result.address).network
            assert result.created and chosen != first and not chosen.overlaps(first)
            assert chosen == expected and chosen.network_address > first.network_address
            assert Path(f"/sys/class/net/{OWN}/bridge").is_dir()
            assert NodeNetwork(tmp_path).bridge(OWN).dhcp is not None
        finally:
            NodeNetwork(tmp_path).remove_bridge(OWN)
    finally:
        subprocess.run(["ip", "link", "del", taker], check=True)
    assert free_subnet() == first


def test_no_nat_unless_asked(tmp_path):
    from engine.network.default import stanza

    subnet = ipaddress.IPv4Network("10.213.4.0/24")
    assert "caisson-nat no" in stanza("vmbr0", subnet, nat=False)
    assert "caisson-nat yes" in stanza("vmbr0", subnet, nat=True)
