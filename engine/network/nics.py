"""A container's network interfaces (``net0`` .. ``net9``) as checked values.

``engine.config`` parses the property string against its schema (unknown
properties, ``net10``, multicast MACs are refused there); this module adds
what needs more than one property at a time: addresses are real CIDRs, the
gateway is not the address itself, VLAN lists parse, the interface name
is one Linux accepts.  Nothing here touches the kernel.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

from engine.config import SCHEMA, ContainerConfig
from engine.errors import ValidationError

MAX_NICS = 10
IFNAME_MAX = 15  # IFNAMSIZ - 1
MAC_PREFIX = "BC:24:11"  # Proxmox's OUI for generated addresses
IP_KEYWORDS = ("dhcp", "manual", "pool")  # "pool" is input only: replaced by an address before it is stored
IP6_KEYWORDS = ("auto", "dhcp", "manual")
MAX_RATE = 4095.0  # MB/s: tbf's rate is a 32-bit count of bytes per second
MIN_MTU = 68  # the kernel's floor for veth
TRUNKS_RE = re.compile(r"^\d+(?:-\d+)?(?:;\d+(?:-\d+)?)*$")
# Order of the properties in a rendered value: name first, then Proxmox's alphabetical order.
_ORDER = (
    "name",
    "bridge",
    "firewall",
    "gw",
    "gw6",
    "host-managed",
    "hwaddr",
    "ip",
    "ip6",
    "link_down",
    "mtu",
    "rate",
    "tag",
    "trunks",
    "type",
)


@dataclass(frozen=True)
class Nic:
    """One ``netN`` entry.  ``ip``/``ip6`` hold a CIDR or a keyword; ``rate`` is in MB/s as in Proxmox."""

    index: int
    name: str
    bridge: str | None = None
    hwaddr: str | None = None
    ip: str | None = None
    gw: str | None = None
    ip6: str | None = None
    gw6: str | None = None
    tag: int | None = None
    trunks: tuple[tuple[int, int], ...] = ()
    mtu: int | None = None
    rate: float | None = None
    firewall: bool = False
    link_down: bool = False
    host_managed: bool | None = None  # Proxmox 9.1: the host sets its addresses (None: not said)

    @property
    def key(self) -> str:
        return f"net{self.index}"

    @property
    def ipv4(self) -> ipaddress.IPv4Interface | None:
        """The static IPv4 address, or None for dhcp, manual, pool and unset."""
        return ipaddress.IPv4Interface(self.ip) if self.ip and self.ip not in IP_KEYWORDS else None

    @property
    def ipv6(self) -> ipaddress.IPv6Interface | None:
        return ipaddress.IPv6Interface(self.ip6) if self.ip6 and self.ip6 not in IP6_KEYWORDS else None

    def trunk_vids(self) -> list[int]:
        return [vid for lo, hi in self.trunks for vid in range(lo, hi + 1)]

    def to_value(self) -> str:
        """The property string for the config file (what the engine persists)."""
        props: dict[str, str] = {"name": self.name, "type": "veth"}
        for field_name in ("bridge", "hwaddr", "ip", "gw", "ip6", "gw6"):
            value = getattr(self, field_name)
            if value is not None:
                props[field_name] = str(value)
        if self.firewall:
            props["firewall"] = "1"
        if self.link_down:
            props["link_down"] = "1"
        if self.host_managed is not None:
            props["host-managed"] = "1" if self.host_managed else "0"
        if self.tag is not None:
            props["tag"] = str(self.tag)
        if self.trunks:
            props["trunks"] = ";".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.trunks)
        if self.mtu is not None:
            props["mtu"] = str(self.mtu)
        if self.rate is not None:
            props["rate"] = f"{self.rate:g}"
        return ",".join(f"{k}={props[k]}" for k in _ORDER if k in props)


def gateway_on_link(nic: Nic, version: int) -> bool:
    """The gateway lies outside the address's subnet: it needs a route to it on the link first."""
    cidr, gw = (nic.ipv4, nic.gw) if version == 4 else (nic.ipv6, nic.gw6)
    if cidr is None or gw is None:
        return False
    address = ipaddress.ip_address(gw)
    if version == 6 and address in ipaddress.ip_network("fe80::/10"):
        return False
    return address not in cidr.network


def host_veth(ctid: int, index: int) -> str:
    """The host end of a container's interface, named as Proxmox names it (at most 15 characters)."""
    return f"veth{ctid}i{index}"


def generate_mac(ctid: int, index: int) -> str:
    """A stable unicast MAC under Proxmox's prefix, derived from (ctid, index).

    IDs up to 1,677,721 map one to one onto the 24 free bits, so no two
    interfaces of a node (or of a cluster with unique IDs) share one; larger
    IDs fall back to a hash, and ``validate`` catches the rare collision.
    """
    number = ctid * MAX_NICS + index
    if number >= 1 << 24:
        import hashlib

        number = int.from_bytes(hashlib.sha256(f"{ctid}:{index}".encode()).digest()[:3], "big")
    tail = number.to_bytes(3, "big")
    return f"{MAC_PREFIX}:" + ":".join(f"{b:02X}" for b in tail)


def parse_nic(index: int, value: str | dict) -> Nic:
    """A ``netN`` value (raw property string or the dict ``engine.config`` parsed) as a checked Nic."""
    key = f"net{index}"
    if not 0 <= index < MAX_NICS:
        raise ValidationError(f"{key}: interfaces are net0 to net{MAX_NICS - 1}", key=key)
    props = SCHEMA[key](value, key) if isinstance(value, str) else dict(value)
    name = str(props["name"])
    _check_ifname(name, key)
    ip = props.get("ip")
    gw = props.get("gw")
    ip6 = props.get("ip6")
    gw6 = props.get("gw6")
    v4 = _check_cidr(ip, 4, IP_KEYWORDS, f"{key}.ip") if ip is not None else None
    v6 = _check_cidr(ip6, 6, IP6_KEYWORDS, f"{key}.ip6") if ip6 is not None else None
    if gw is not None:
        gw = _check_gateway(gw, None if v4 in IP_KEYWORDS else v4, ip, 4, f"{key}.gw")
    if gw6 is not None:
        gw6 = _check_gateway(gw6, None if v6 in IP6_KEYWORDS else v6, ip6, 6, f"{key}.gw6")
    rate = props.get("rate")
    if rate is not None:
        if rate > MAX_RATE:
            raise ValidationError(
                f"{key}.rate: {rate:g} MB/s is above the {MAX_RATE:g} MB/s the kernel's "
                "shaper can hold; leave rate unset for no limit",
                key=key,
            )
        rate = rate or None  # 0 means no limit
    mtu = props.get("mtu")
    if mtu is not None and mtu < MIN_MTU:
        raise ValidationError(f"{key}.mtu: {mtu} is below {MIN_MTU}, the smallest MTU of a veth", key=key)
    tag = props.get("tag")
    if tag is not None and not (isinstance(tag, int) and 1 <= tag <= 4094):
        raise ValidationError(f"{key}.tag: {tag!r} is not a VLAN ID within 1..4094", key=key)
    trunks = _parse_trunks(str(props["trunks"]), key) if props.get("trunks") else ()
    hwaddr = props.get("hwaddr")
    return Nic(
        index=index,
        name=name,
        bridge=props.get("bridge") or None,
        hwaddr=hwaddr.upper() if hwaddr else None,
        ip=ip,
        gw=gw,
        ip6=ip6,
        gw6=gw6,
        tag=tag,
        trunks=trunks,
        mtu=mtu,
        rate=rate,
        firewall=bool(props.get("firewall")),
        link_down=bool(props.get("link_down")),
        host_managed=None if props.get("host-managed") is None else bool(props["host-managed"]),
    )


def from_config(config: ContainerConfig) -> list[Nic]:
    """The interfaces of a container's current config, by index."""
    return [
        parse_nic(i, config.current.values[f"net{i}"]) for i in range(MAX_NICS) if f"net{i}" in config.current.values
    ]


def with_mac(ctid: int, nic: Nic) -> Nic:
    """The nic with its MAC filled in, so the engine can persist it at create and set."""
    return nic if nic.hwaddr else replace(nic, hwaddr=generate_mac(ctid, nic.index))


def check_names(nics: list[Nic]) -> None:
    """Two interfaces of one container may not share a name inside it."""
    seen: dict[str, str] = {}
    for nic in nics:
        if nic.name in seen:
            raise ValidationError(
                f"{nic.key}: interface name '{nic.name}' is already used by {seen[nic.name]}", key=nic.key
            )
        seen[nic.name] = nic.key


def _check_ifname(name: str, key: str) -> None:
    if not 1 <= len(name) <= IFNAME_MAX or name in (".", "..", "lo") or any(c in name for c in "/: \t\n%"):
        raise ValidationError(
            f"{key}.name: '{name}' is not a usable interface name (1 to {IFNAME_MAX} characters, "
            "no '/', ':', '%' or spaces, not 'lo')",
            key=key,
        )


def _check_cidr(value: str, version: int, keywords: tuple[str, ...], field: str) -> str:
    key = field.split(".")[0]
    if value in keywords:
        return value
    kind = "IPv4" if version == 4 else "IPv6"
    if "/" not in value:
        raise ValidationError(
            f"{field}: '{value}' needs a prefix length ({kind} CIDR like "
            f"{'10.0.0.2/24' if version == 4 else 'fd00::2/64'}) or one of {', '.join(keywords)}",
            key=key,
        )
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError as exc:
        raise ValidationError(f"{field}: '{value}' is not a valid {kind} CIDR ({exc})", key=key) from None
    if iface.version != version:
        raise ValidationError(f"{field}: '{value}' is not an {kind} address", key=key)
    if iface.ip.is_multicast or iface.ip.is_unspecified or iface.ip.is_loopback:
        raise ValidationError(f"{field}: '{value}' cannot be an interface address", key=key)
    net = iface.network
    if version == 4 and net.prefixlen <= 30 and iface.ip in (net.network_address, net.broadcast_address):
        raise ValidationError(f"{field}: '{value}' is the network's own or broadcast address", key=key)
    return value


def _check_gateway(gw: str, iface: str | None, ip: str | None, version: int, field: str) -> str:
    key = field.split(".")[0]
    try:
        address = ipaddress.ip_address(gw)
    except ValueError:
        raise ValidationError(f"{field}: '{gw}' is not an IP address", key=key) from None
    if address.version != version:
        raise ValidationError(f"{field}: '{gw}' is not an IPv{version} address", key=key)
    if iface is None and ip != "pool":
        raise ValidationError(
            f"{field}: a gateway needs a static address in '{'ip' if version == 4 else 'ip6'}' (got {ip or 'none'})",
            key=key,
        )
    # A gateway outside the subnet is accepted, as Proxmox does (a routed /32 with the provider's gateway):
    # it is reached by a route on the link first.
    if iface is not None and not (version == 6 and address.is_link_local):
        if address == ipaddress.ip_interface(iface).ip:
            raise ValidationError(f"{field}: gateway {gw} is the interface's own address", key=key)
    return str(address)


def _parse_trunks(value: str, key: str) -> tuple[tuple[int, int], ...]:
    if not TRUNKS_RE.match(value):
        raise ValidationError(f"{key}.trunks: '{value}' is not a list of VLAN IDs like 10;20;30-40", key=key)
    ranges = []
    for part in value.split(";"):
        lo, _, hi = part.partition("-")
        first, last = int(lo), int(hi or lo)
        if not 1 <= first <= last <= 4094:
            raise ValidationError(f"{key}.trunks: '{part}' is not a VLAN range within 1..4094", key=key)
        ranges.append((first, last))
    return tuple(sorted(set(ranges)))
