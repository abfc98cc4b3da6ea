"""Editing the node's bridges: one stanza of ``<state root>/network/interfaces`` written, then applied.

The node's Network panel (Proxmox's ``/nodes/{node}/network``) changes bridges through jobs that call
these functions.  The file stays the truth: other stanzas, comments and an administrator's own lines
are kept as written; the whole new file is parsed before it replaces the old one; and the host is
brought to the new definition at once.  A change the host refuses is undone (the old file written
back, the old definition applied again), so a failed edit leaves the node as it was.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from engine.config import write_atomic
from engine.errors import AlreadyExists, HostError, NotFound, ValidationError
from engine.network import netlink
from engine.network.bridges import SYS_NET, NodeNetwork
from engine.network.ifupdown import Bridge, _vids_ok, parse_interfaces
from engine.network.pool import node_lock

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,14}$")
# Names the engine makes itself (container veths, ifb devices, per-tag bridges are <bridge>v<N>).
RESERVED_PREFIXES = ("veth", "ifb", "fwbr", "fwpr", "fwln", "lo")
TOP_LEVEL = ("auto", "allow-", "iface", "source", "mapping")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise ValidationError(
            f"'{name}' is not a bridge name: a letter, then letters, digits, '_', '.', '-' (15 at most)", key="name"
        )
    if name.startswith(RESERVED_PREFIXES):
        raise ValidationError(f"'{name}': names starting with {', '.join(RESERVED_PREFIXES)} are reserved", key="name")
    return name


def _range(value: str, key: str, net: ipaddress.IPv4Network | None, own) -> tuple:
    first, sep, last = str(value).partition("-")
    try:
        span = (ipaddress.IPv4Address(first.strip()), ipaddress.IPv4Address(last.strip()))
    except ValueError:
        span = None
    if not sep or span is None:
        raise ValidationError(f"'{value}' is not a range like 10.213.0.100-10.213.0.199", key=key)
    if net is None:
        raise ValidationError("a range needs the bridge's IPv4 address (its subnet)", key=key)
    if span[0] > span[1] or span[0] not in net or span[1] not in net:
        raise ValidationError(f"{value}: the range must be ascending and inside {net}", key=key)
    if span[0] in (net.network_address, net.broadcast_address) or span[1] == net.broadcast_address:
        raise ValidationError(f"{value}: the range may not hold the subnet's network or broadcast address", key=key)
    if span[0] <= own <= span[1]:
        raise ValidationError(f"{value}: the range holds the bridge's own address {own}", key=key)
    return span


def bridge_from_fields(name: str, fields: dict) -> Bridge:
    """A bridge from the panel's fields, each checked: a ValidationError's ``key`` names the bad field.

    ``fields``: ``address`` (IPv4 CIDR), ``address6`` (IPv6 CIDR), ``ports`` (names, a list or a
    space-separated string), ``vlan_aware``, ``vids``, ``mtu``, ``pool`` and ``dhcp`` (ranges
    ``first-last``), ``nat``; absent or empty means unset.
    """
    unknown = set(fields) - {"address", "address6", "ports", "vlan_aware", "vids", "mtu", "pool", "dhcp", "nat"}
    if unknown:
        raise ValidationError(f"unknown field(s): {', '.join(sorted(unknown))}", key=sorted(unknown)[0])
    bridge = Bridge(check_name(name))
    if fields.get("address"):
        value = str(fields["address"]).strip()
        try:
            if "/" not in value:
                raise ValueError("give the prefix length, e.g. 10.10.0.1/24")
            bridge.address = ipaddress.IPv4Interface(value)
        except ValueError as exc:
            raise ValidationError(f"'{value}' is not an IPv4 address in CIDR form: {exc}", key="address") from None
        net = bridge.address.network
        if net.prefixlen < 31 and bridge.address.ip in (net.network_address, net.broadcast_address):
            raise ValidationError(f"{value} is the subnet's network or broadcast address", key="address")
    if fields.get("address6"):
        value = str(fields["address6"]).strip()
        try:
            if "/" not in value:
                raise ValueError("give the prefix length, e.g. fd00:10::1/64")
            bridge.address6 = ipaddress.IPv6Interface(value)
        except ValueError as exc:
            raise ValidationError(f"'{value}' is not an IPv6 address in CIDR form: {exc}", key="address6") from None
    ports = fields.get("ports") or []
    ports = ports.split() if isinstance(ports, str) else ports
    if not isinstance(ports, list) or not all(isinstance(p, str) for p in ports):
        raise ValidationError("ports: a list of interface names", key="ports")
    for port in ports:
        if not NAME.match(port) or port == name:
            raise ValidationError(f"'{port}' is not an interface name this bridge can take as a port", key="ports")
    if len(set(ports)) != len(ports):
        raise ValidationError("a port is listed twice", key="ports")
    bridge.ports = list(ports)
    bridge.vlan_aware = _flag(fields.get("vlan_aware"), "vlan_aware")
    if fields.get("vids") not in (None, ""):
        if not bridge.vlan_aware:
            raise ValidationError("VLAN IDs only apply to a VLAN-aware bridge", key="vids")
        if not isinstance(fields["vids"], str) or not _vids_ok(fields["vids"]):
            raise ValidationError(f"'{fields['vids']}' is not a VLAN list like 2-4094 or '10 20-30'", key="vids")
        bridge.vids = fields["vids"]
    if fields.get("mtu") not in (None, ""):
        mtu = fields["mtu"]
        if isinstance(mtu, bool) or not str(mtu).isdigit() or not 1280 <= int(mtu) <= 65520:
            raise ValidationError(f"MTU '{mtu}' must be a whole number from 1280 to 65520", key="mtu")
        bridge.mtu = int(mtu)
    net = bridge.address.network if bridge.address else None
    own = bridge.address.ip if bridge.address else None
    for key in ("pool", "dhcp"):
        if fields.get(key):
            setattr(bridge, key, _range(fields[key], key, net, own))
    if bridge.pool and bridge.dhcp and not (bridge.pool[1] < bridge.dhcp[0] or bridge.dhcp[1] < bridge.pool[0]):
        raise ValidationError("the DHCP range overlaps the address pool", key="dhcp")
    bridge.nat = _flag(fields.get("nat"), "nat")
    if bridge.nat and bridge.address is None:
        raise ValidationError("NAT needs the bridge's IPv4 address (its subnet is what is masqueraded)", key="nat")
    return bridge


def _flag(value, key: str) -> bool:
    if value in (None, "", False, 0, "0", "no", "off", "false"):
        return False
    if value in (True, 1, "1", "yes", "on", "true"):
        return True
    raise ValidationError(f"'{value}' is not yes or no", key=key)


def render_stanza(bridge: Bridge) -> str:
    """The bridge's ifupdown stanza, as Proxmox writes one (plus Caisson's pool, DHCP and NAT lines)."""
    lines = [f"auto {bridge.name}", f"iface {bridge.name} inet {'static' if bridge.address else 'manual'}"]
    if bridge.address:
        lines.append(f"    address {bridge.address}")
    lines += [f"    bridge-ports {' '.join(bridge.ports) or 'none'}", "    bridge-stp off", "    bridge-fd 0"]
    if bridge.vlan_aware:
        lines += ["    bridge-vlan-aware yes", f"    bridge-vids {bridge.vids}"]
    if bridge.mtu:
        lines.append(f"    mtu {bridge.mtu}")
    for option, span in (("caisson-pool", bridge.pool), ("caisson-dhcp", bridge.dhcp)):
        if span:
            lines.append(f"    {option} {span[0]}-{span[1]}")
    lines.append(f"    caisson-nat {'yes' if bridge.nat else 'no'}")
    if bridge.address6:
        lines += ["", f"iface {bridge.name} inet6 static", f"    address {bridge.address6}"]
    return "\n".join(lines) + "\n"


def replace_stanza(text: str, name: str, stanza: str | None) -> str:
    """``text`` with every ``iface <name>`` stanza and ``auto``/``allow-*`` mention of ``name`` taken out and
    ``stanza`` (when given) put where the first one was, or at the end; everything else stays as written."""
    out: list[str] = []
    at: int | None = None
    skipping = False
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        top = bool(words) and words[0].startswith(TOP_LEVEL) and not raw[:1].isspace()
        if top:
            skipping = False
        if top and words[0] == "iface" and len(words) > 1 and words[1] == name:
            skipping = True
            at = len(out) if at is None else at
            continue
        if top and (words[0] == "auto" or words[0].startswith("allow-")) and name in words[1:]:
            at = len(out) if at is None else at
            rest = [w for w in words[1:] if w != name]
            if rest:
                out.append(" ".join([words[0], *rest]))
            continue
        if not skipping:
            out.append(raw)
    while out and not out[-1].strip():
        out.pop()
    if stanza is not None:
        block = stanza.rstrip("\n").splitlines()
        if at is None or at >= len(out):
            out += ([""] if out else []) + block
        else:
            out[at:at] = [*block, ""]
    return "\n".join(out) + "\n" if out else ""


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def set_bridge(root: Path | str, bridge: Bridge, create: bool) -> None:
    """Write the bridge's stanza (a new one, or replacing its definition) and bring the host to it."""
    root = Path(root)
    path = root / "network" / "interfaces"
    with node_lock(root):
        old_text = _read(path)
        old = parse_interfaces(old_text, str(path)).get(bridge.name)
        if create and old is not None:
            raise AlreadyExists(f"bridge '{bridge.name}' is already defined in {path}")
        if create and (SYS_NET / bridge.name).exists():
            raise AlreadyExists(f"the host already has an interface '{bridge.name}'")
        if not create and old is None:
            raise NotFound(f"bridge '{bridge.name}' is not defined in {path}")
        _check_ports(root, bridge, parse_interfaces(old_text, str(path)))
        new_text = replace_stanza(old_text, bridge.name, render_stanza(bridge))
        parse_interfaces(new_text, str(path))  # what is written must read back
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        write_atomic(path, new_text, 0o644)
        try:
            _apply(root, old, bridge)
        except Exception:
            if old_text:
                write_atomic(path, old_text, 0o644)
            else:
                path.unlink(missing_ok=True)
            if old is not None:
                _apply(root, bridge, old)
            elif (SYS_NET / bridge.name).exists():
                NodeNetwork(root).remove_bridge(bridge.name)
                if bridge.nat:
                    from engine.network.nat import remove_nat

                    remove_nat(bridge.name)
            raise


def _check_ports(root: Path, bridge: Bridge, defined: dict[str, Bridge]) -> None:
    for port in bridge.ports:
        if not (SYS_NET / port).exists():
            raise ValidationError(f"port '{port}' does not exist on this host", key="ports")
        if (SYS_NET / port / "bridge").is_dir():
            raise ValidationError(f"port '{port}' is itself a bridge", key="ports")
        owner = next((b.name for b in defined.values() if port in b.ports and b.name != bridge.name), None)
        master = SYS_NET / port / "master"
        if owner or (master.exists() and master.resolve().name != bridge.name):
            raise ValidationError(
                f"port '{port}' already belongs to bridge '{owner or master.resolve().name}'", key="ports"
            )


def _apply(root: Path, old: Bridge | None, new: Bridge) -> None:
    """Bring the host's bridge from ``old``'s definition to ``new``'s: what ``new`` drops is taken off."""
    from engine.network.container import bridge_dhcp_server
    from engine.network.nat import apply_nat, remove_nat

    node = NodeNetwork(root)
    with netlink.host() as ipr:
        info = netlink.link(ipr, new.name)
        if info is not None and info["kind"] == "bridge" and old is not None:
            index = info["index"]
            for before, after in ((old.address, new.address), (old.address6, new.address6)):
                if before is not None and before != after:
                    netlink.del_address(ipr, index, str(before))
            for port in set(old.ports) - set(new.ports):
                port_info = netlink.link(ipr, port)
                if port_info is not None:
                    netlink.set_link(ipr, port_info["index"], master=0)
            if old.vlan_aware and not new.vlan_aware and info["vlan_filtering"]:
                netlink.set_vlan_filtering(ipr, index, False)
        node._ensure(ipr, new)  # noqa: SLF001 - one definition, applied as ensure_bridges applies each
    if new.nat:
        apply_nat(new)
    elif old is not None and old.nat:
        remove_nat(new.name)
    if old is not None and (old.dhcp, old.address) != (new.dhcp, new.address):
        server = bridge_dhcp_server(root, old)
        if server is not None and server.running():
            server.stop()
            fresh = bridge_dhcp_server(root, new)
            if fresh is not None:
                fresh.start()


def delete_bridge(root: Path | str, name: str, users: list[int]) -> None:
    """Take a bridge out of the file and off the host (its NAT table and DHCP server too).

    ``users``: the containers whose NICs name it; a bridge in use is refused, naming them.
    """
    from engine.network.container import dhcp_server

    root = Path(root)
    path = root / "network" / "interfaces"
    with node_lock(root):
        text = _read(path)
        node = NodeNetwork(root)
        if name not in node.bridges():
            raise NotFound(f"bridge '{name}' is not defined in {path}")
        if users:
            raise ValidationError(
                f"bridge '{name}' is used by CT {', '.join(map(str, sorted(users)))}: move their NICs first", key="name"
            )
        server = dhcp_server(root, node, name)
        new_text = replace_stanza(text, name, None)
        parse_interfaces(new_text, str(path))
        write_atomic(path, new_text, 0o644)
        try:
            if server is not None:
                server.stop()
            node.remove_bridge(name)
        except (HostError, OSError):
            write_atomic(path, text, 0o644)
            raise
