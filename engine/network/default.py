"""The node's default bridge ``vmbr0``, made at set-up as Proxmox's installer makes its own.

Proxmox bridges ``vmbr0`` to the uplink on the host's address; a Caisson node
runs beside whatever the host already does, so its ``vmbr0`` has no ports and
a private /24 of its own instead, with an address pool (``ip=pool``) and a
DHCP range (``ip=dhcp``, the node's dnsmasq) and no NAT unless asked. The
subnet is the first /24 from :data:`FIRST_SUBNET` on that clashes with no
address or route of the host, so a machine already using it (a VPN, another
bridge) gets the next one.

An existing interfaces file, or a host interface of that name, is left alone:
the set-up may run any number of times, and an administrator's edits win.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.config import write_atomic
from engine.errors import HostError
from engine.network.bridges import SYS_NET, NodeNetwork
from engine.network.ifupdown import parse_interfaces
from engine.network.pool import node_lock

DEFAULT_BRIDGE = "vmbr0"
# Seldom used by other software (Docker takes 172.17/16, libvirt 192.168.122/24, LXC 10.0.3/24).
FIRST_SUBNET = ipaddress.IPv4Network("10.213.0.0/24")
CANDIDATES = 256  # 10.213.0.0/24 up to 10.213.255.0/24


@dataclass
class DefaultBridge:
    """What :func:`init_default` did: ``created`` False with the ``reason`` when it left things alone."""

    name: str
    created: bool
    reason: str = ""
    address: str | None = None
    pool: str | None = None
    dhcp: str | None = None
    nat: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def host_networks() -> list[ipaddress.IPv4Network]:
    """The IPv4 networks the host uses: its addresses' subnets and its routes (the default route aside)."""
    from engine.network import netlink

    found = []
    with netlink.host() as ipr:
        for msg in ipr.get_addr(family=socket.AF_INET):
            found.append(ipaddress.IPv4Interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}").network)
        for msg in ipr.get_routes(family=socket.AF_INET):
            if msg["dst_len"] and msg.get_attr("RTA_DST"):
                found.append(ipaddress.IPv4Network(f"{msg.get_attr('RTA_DST')}/{msg['dst_len']}", strict=False))
    return found


def free_subnet(used: list[ipaddress.IPv4Network] | None = None) -> ipaddress.IPv4Network:
    """The first /24 from :data:`FIRST_SUBNET` that overlaps none of ``used`` (default: the host's)."""
    used = host_networks() if used is None else used
    for step in range(CANDIDATES):
        candidate = ipaddress.IPv4Network((int(FIRST_SUBNET.network_address) + step * 256, 24))
        if not any(candidate.overlaps(net) for net in used):
            return candidate
    raise HostError(
        f"no free /24 between {FIRST_SUBNET} and {candidate}: the host uses all of them; "
        "write the bridge into the interfaces file by hand"
    )


def stanza(name: str, subnet: ipaddress.IPv4Network, nat: bool) -> str:
    """The ifupdown stanza: .1 the bridge, .100-.199 the pool, .200-.249 the DHCP range."""
    host = list(subnet.hosts())
    return (
        f"auto {name}\n"
        f"iface {name} inet static\n"
        f"    address {host[0]}/{subnet.prefixlen}\n"
        f"    bridge-ports none\n"
        f"    bridge-stp off\n"
        f"    bridge-fd 0\n"
        f"    caisson-pool {host[99]}-{host[198]}\n"
        f"    caisson-dhcp {host[199]}-{host[248]}\n"
        f"    caisson-nat {'yes' if nat else 'no'}\n"
    )


def init_default(root: Path | str, name: str = DEFAULT_BRIDGE, nat: bool = False, apply: bool = True) -> DefaultBridge:
    """Write the default bridge into ``<root>/network/interfaces`` and create it (``apply``), unless
    the file exists or the host already has an interface ``name``."""
    path = Path(root) / "network" / "interfaces"
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    with node_lock(Path(root)):
        if path.exists():
            return DefaultBridge(name, False, f"{path} exists; left as it is")
        if (SYS_NET / name).exists():
            return DefaultBridge(name, False, f"the host already has an interface '{name}'; left as it is")
        text = (
            "# The node's bridges (ifupdown syntax, see Caisson's README). Written at set-up;\n"
            "# edit freely: the set-up never rewrites this file.\n\n" + stanza(name, free_subnet(), nat)
        )
        parse_interfaces(text, str(path))  # what is written must read back
        write_atomic(path, text, 0o644)
    if apply:
        NodeNetwork(root).ensure_bridge(name)
    bridge = NodeNetwork(root).bridges()[name]
    return DefaultBridge(
        name,
        True,
        "",
        str(bridge.address),
        "-".join(map(str, bridge.pool)),
        "-".join(map(str, bridge.dhcp)),
        bridge.nat,
    )
