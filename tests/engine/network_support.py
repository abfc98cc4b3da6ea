"""Helpers for the network tests: this run's bridges and namespaces, and fixtures that remove them.

Each test run names its bridges ``cbr<4 hex>x`` and its namespaces ``cns<4 hex>N``, puts
addresses from one 10.213.x.0/24 on its own bridges only, and removes all of it afterwards.
Traffic flows only between the host and the namespaces and bridges made here.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time

import pytest

from engine import network as net
from engine.network import netlink

RUN = secrets.token_hex(2)
SUBNET = 10 + int(RUN, 16) % 200  # third octet: concurrent runs rarely share one
BR_A, BR_B, BR_V, BR_X = (f"cbr{RUN}{s}" for s in "abvx")
GW = f"10.213.{SUBNET}.1"
CTID_BASE = 800_000 + int(RUN, 16) % 1000 * 100


def ip(host: int) -> str:
    return f"10.213.{SUBNET}.{host}"


INTERFACES = f"""
auto {BR_A}
iface {BR_A} inet static
    address {GW}/24
    bridge-ports none
    bridge-stp off
    caisson-pool {ip(100)}-{ip(103)}

iface {BR_A} inet6 static
    address fd00:213:{SUBNET:x}::1/64

auto {BR_B}
iface {BR_B} inet manual
    bridge-ports none
"""


def vlan_filtering_supported() -> bool:
    name = f"cbr{RUN}p"
    done = subprocess.run(["ip", "link", "add", name, "type", "bridge", "vlan_filtering", "1"], capture_output=True)
    subprocess.run(["ip", "link", "del", name], capture_output=True)
    return done.returncode == 0


VLAN = vlan_filtering_supported()


def vlan_devices_supported() -> bool:
    """Can this kernel make 802.1Q VLAN devices (CONFIG_VLAN_8021Q), as the per-tag bridges' ports need."""
    port = f"cbr{RUN}q"
    subprocess.run(["ip", "link", "add", port, "type", "veth", "peer", "name", f"cbr{RUN}r"], capture_output=True)
    done = subprocess.run(
        ["ip", "link", "add", "link", port, "name", f"{port}.2", "type", "vlan", "id", "2"], capture_output=True
    )
    subprocess.run(["ip", "link", "del", port], capture_output=True)
    return done.returncode == 0


VLAN_DEVICES = vlan_devices_supported()


class Namespace:
    """A network namespace standing in for a container's: a sleeping process inside gives the pid."""

    def __init__(self, name: str):
        self.name = name
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.proc = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "600"])
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{self.proc.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            assert time.monotonic() < deadline, "the sleeper never entered its namespace"
            time.sleep(0.005)
        self.pid = self.proc.pid

    def run(self, *argv: str, timeout: float = 10, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *argv], capture_output=True, text=True, timeout=timeout, input=input
        )

    def ping(self, address: str) -> bool:
        return self.run("busybox", "ping", "-c1", "-W1", address).returncode == 0

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


@pytest.fixture(scope="module", name="node")
def node_fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("netnode")
    (root / "network").mkdir()
    (root / "network" / "interfaces").write_text(INTERFACES)
    node = net.NodeNetwork(root)
    try:
        node.ensure_bridges()
        yield node
    finally:
        for name in (BR_A, BR_B, BR_V, BR_X):
            subprocess.run(["ip", "link", "del", name], capture_output=True)
        netlink.close_cached()


@pytest.fixture(name="spaces")
def spaces_fixture():
    """Hands out namespaces and container IDs; tears down every interface and namespace after the test."""
    made: list[Namespace] = []
    ctids: list[int] = []

    def make() -> tuple[int, Namespace]:
        space = Namespace(f"cns{RUN}{len(made)}")
        made.append(space)
        ctids.append(CTID_BASE + len(ctids))
        return ctids[-1], space

    yield make
    for ctid in ctids:
        net.teardown_nics(ctid, [])
    for space in made:
        space.close()


def nic(index: int, value: str) -> net.Nic:
    return net.parse_nic(index, value)


def plug(node, make, value: str, *more: str) -> tuple[int, Namespace, list[net.Nic]]:
    ctid, space = make()
    nics = [nic(i, v) for i, v in enumerate((value, *more))]
    net.prepare_nics(ctid, nics, node)(space.pid)
    return ctid, space, nics


def host_links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
