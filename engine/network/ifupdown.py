"""The node's bridge definitions: ``<state root>/network/interfaces``, parsed.

The file uses the subset of Debian's ifupdown syntax that Proxmox's
``/etc/network/interfaces`` uses for bridges, so one can be copied over::

    auto vmbr0
    iface vmbr0 inet static
        address 10.213.0.1/24
        bridge-ports none
        bridge-vlan-aware yes
        bridge-vids 2-4094
        caisson-pool 10.213.0.100-10.213.0.199
        caisson-nat no

A stanza is a bridge when it has ``bridge-ports``; other stanzas (``lo``,
``eth0``) are skipped, since the host's own interfaces are not Caisson's to
manage.  ``caisson-pool`` is the range ``ip=pool`` draws from; ``caisson-dhcp`` the range the node's DHCP server leases;
``caisson-nat yes`` masquerades the bridge's subnet with nftables (off by
default).  ``gateway`` is accepted and ignored: the host's own routes are not
Caisson's.  Options that would run commands (``post-up``...) are refused: the
engine never runs shell lines from a config file.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NoReturn

from engine.errors import ValidationError
from engine.network.nics import IFNAME_MAX

_KNOWN = {
    "address",
    "netmask",
    "gateway",
    "mtu",
    "bridge-ports",
    "bridge-stp",
    "bridge-fd",
    "bridge-vlan-aware",
    "bridge-vids",
    "caisson-pool",
    "caisson-nat",
    "caisson-dhcp",
}


@dataclass
class Bridge:
    """A bridge the node knows: from the interfaces file (``defined``) or found on the host (adopted as is)."""

    name: str
    address: ipaddress.IPv4Interface | None = None
    address6: ipaddress.IPv6Interface | None = None
    ports: list[str] = field(default_factory=list)
    vlan_aware: bool = False
    vids: str = "2-4094"
    mtu: int | None = None
    pool: tuple[ipaddress.IPv4Address, ipaddress.IPv4Address] | None = None
    dhcp: tuple[ipaddress.IPv4Address, ipaddress.IPv4Address] | None = None  # range the node's DHCP server leases
    nat: bool = False
    defined: bool = True

    def pool_addresses(self) -> Iterator[ipaddress.IPv4Address]:
        """Every address of the pool, in order."""
        if not self.pool:
            return iter(())
        first, last = (int(a) for a in self.pool)
        return (ipaddress.IPv4Address(n) for n in range(first, last + 1))


def parse_interfaces(text: str, origin: str = "interfaces") -> dict[str, Bridge]:
    """Bridges from ifupdown-style text; ValidationError naming the line for anything malformed."""
    stanzas: dict[str, list[tuple[int, str, str, str]]] = {}  # name -> (line, family, option, value)
    current: tuple[str, str] | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        where = f"{origin} line {lineno}"
        if words[0] in ("auto", "allow-hotplug"):
            current = None
        elif words[0] == "iface":
            if (
                len(words) != 4
                or words[2] not in ("inet", "inet6")
                or words[3] not in ("static", "manual", "loopback", "dhcp")
            ):
                raise ValidationError(f"{where}: expected 'iface <name> inet|inet6 static|manual'", key="network")
            current = (words[1], words[2])
            stanzas.setdefault(words[1], []).append((lineno, words[2], "", ""))
        elif words[0] in ("source", "source-directory", "mapping"):
            raise ValidationError(f"{where}: '{words[0]}' is not supported", key="network")
        elif current is None:
            raise ValidationError(f"{where}: option '{words[0]}' outside an iface stanza", key="network")
        else:
            stanzas[current[0]].append((lineno, current[1], words[0].replace("_", "-"), " ".join(words[1:])))
    bridges = {}
    for name, options in stanzas.items():
        if any(opt == "bridge-ports" for _, _, opt, _ in options):
            bridges[name] = _bridge(name, options, origin)
    return bridges


def _bridge(name: str, options: list[tuple[int, str, str, str]], origin: str) -> Bridge:
    if not 1 <= len(name) <= IFNAME_MAX or any(c in name for c in "/: "):
        raise ValidationError(f"{origin}: '{name}' is not a valid interface name", key="network")
    bridge = Bridge(name)
    netmask = None
    for lineno, family, option, value in options:
        where = f"{origin} line {lineno} ({name})"
        if not option:
            continue
        if option not in _KNOWN:
            raise ValidationError(
                f"{where}: option '{option}' is not supported (supported: {', '.join(sorted(_KNOWN))})", key="network"
            )
        try:
            if option == "address" and family == "inet6":
                bridge.address6 = ipaddress.IPv6Interface(value)
            elif option == "address":
                bridge.address = ipaddress.IPv4Interface(value)
            elif option == "netmask":
                netmask = value
            elif option == "bridge-ports":
                bridge.ports = [] if value == "none" else value.split()
            elif option == "bridge-vlan-aware":
                bridge.vlan_aware = _yes(value, where)
            elif option == "caisson-nat":
                bridge.nat = _yes(value, where)
            elif option == "bridge-vids":
                bridge.vids = value if _vids_ok(value) else _bad(where, f"'{value}' is not a VLAN range like 2-4094")
            elif option == "mtu":
                bridge.mtu = int(value) if value.isdigit() and 68 <= int(value) <= 65535 else _bad(where, "bad mtu")
            elif option in ("caisson-pool", "caisson-dhcp"):
                first, sep, last = value.partition("-")
                if not sep:
                    _bad(where, f"'{value}' is not a range like 10.213.0.100-10.213.0.199")
                span = (ipaddress.IPv4Address(first.strip()), ipaddress.IPv4Address(last.strip()))
                if option == "caisson-pool":
                    bridge.pool = span
                else:
                    bridge.dhcp = span
            elif option == "bridge-stp" and value not in ("off", "no", "0"):
                _bad(where, "only 'bridge-stp off' is supported")
        except ValueError as exc:
            raise ValidationError(f"{where}: {option} '{value}': {exc}", key="network") from None
    if netmask and bridge.address is not None and "/" not in str(netmask):
        bridge.address = ipaddress.IPv4Interface(f"{bridge.address.ip}/{netmask}")
    for option, span in (("caisson-pool", bridge.pool), ("caisson-dhcp", bridge.dhcp)):
        if span:
            _check_range(bridge, origin, option, span)
    if bridge.pool and bridge.dhcp and not (bridge.pool[1] < bridge.dhcp[0] or bridge.dhcp[1] < bridge.pool[0]):
        raise ValidationError(f"{origin} ({bridge.name}): caisson-pool and caisson-dhcp ranges overlap", key="network")
    return bridge


def _check_range(bridge: Bridge, origin: str, option: str, span) -> None:
    first, last = span
    where = f"{origin} ({bridge.name}): {option} {first}-{last}"
    if bridge.address is None:
        raise ValidationError(f"{where}: a range needs the bridge's IPv4 address (its subnet)", key="network")
    net = bridge.address.network
    if first > last or first not in net or last not in net:
        raise ValidationError(f"{where}: the range must be ascending and inside {net}", key="network")


def _yes(value: str, where: str) -> bool:
    if value not in ("yes", "no", "on", "off", "1", "0"):
        _bad(where, f"'{value}' is not yes or no")
    return value in ("yes", "on", "1")


def _vids_ok(value: str) -> bool:
    for part in value.split():
        lo, _, hi = part.partition("-")
        if not (lo.isdigit() and (not hi or hi.isdigit()) and 1 <= int(lo) <= int(hi or lo) <= 4094):
            return False
    return bool(value.split())


def _bad(where: str, message: str) -> NoReturn:
    raise ValidationError(f"{where}: {message}", key="network")
