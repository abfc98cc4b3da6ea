"""Which bridges a container's NIC may use, and what about a NIC needs ``VM.Config.Network``.

A NIC may use a bridge Caisson manages on the container's node (one defined in the node's
``network/interfaces``, which the agent reports in ``Node.info["bridges"]``) or one an administrator
allowed on that node (``Node.allowed_bridges``, changed with Sys.Modify on the node).  Any other bridge
is refused for everybody, as Proxmox refuses a vnet one may not use.

Within an allowed bridge, a NIC stays inside its allocation unless the user holds ``VM.Config.Network``:

- its firewall stays on (a new NIC without ``firewall=1``, or turning it off, needs the privilege);
- its MAC is the one Caisson generates (``hwaddr`` left out or unchanged);
- its IPv4 address comes from the bridge: ``dhcp``, ``pool`` (or none).  On a managed bridge with a
  ``caisson-pool`` every static address needs the privilege (the pool is how addresses are handed out,
  as an IPAM's); on one without a pool a static address must lie in the bridge's subnet, be neither the
  bridge's own address nor in its ``caisson-dhcp`` range.  A static IPv6 address must lie in the bridge's
  IPv6 subnet when it has one.  On an administrator-allowed host bridge Caisson knows no allocation: only
  the firewall and MAC rules apply.

A value that is unchanged from the container's current one never needs more than it did (old containers
keep working).  Create, config edit, restore and clone all call ``check_nic_rights``.
"""

from __future__ import annotations

import ipaddress

from django.core.exceptions import PermissionDenied, ValidationError

from engine.errors import ValidationError as EngineValidationError
from engine.network.nics import Nic, generate_mac, parse_nic

PRIVILEGE = "VM.Config.Network"


def managed_bridges(node) -> dict[str, dict]:
    """The bridges the node's interfaces file defines, as its agent last reported them."""
    return {b["name"]: b for b in (node.info or {}).get("bridges", []) if isinstance(b, dict) and b.get("name")}


def usable_bridges(node) -> list[str]:
    """Every bridge a NIC on this node may use: managed ones, then those an administrator allowed."""
    managed = list(managed_bridges(node))
    return managed + [b for b in node.allowed_bridges if b not in managed]


def _static_problem(nic: Nic, bridge: dict) -> str | None:
    """Why this NIC's static address lies outside the bridge's allocation, or None."""
    ip4 = nic.ipv4
    if ip4 is not None:
        if bridge.get("pool"):
            return (
                f"a static IPv4 address on bridge '{nic.bridge}', which hands out addresses from its pool "
                f"({bridge['pool']}; use ip=pool or ip=dhcp)"
            )
        if bridge.get("ipv4"):
            subnet = ipaddress.IPv4Interface(bridge["ipv4"])
            first, _, last = (bridge.get("dhcp") or "-").partition("-")
            in_dhcp = bool(first) and ipaddress.IPv4Address(first) <= ip4.ip <= ipaddress.IPv4Address(last)
            if ip4.ip not in subnet.network or ip4.ip == subnet.ip or in_dhcp:
                return (
                    f"IPv4 address {ip4.ip} outside bridge '{nic.bridge}''s allocation ({subnet.network}, "
                    "not the bridge's own address nor its DHCP range)"
                )
    ip6 = nic.ipv6
    if ip6 is not None and bridge.get("ipv6"):
        subnet6 = ipaddress.IPv6Interface(bridge["ipv6"])
        if ip6.ip not in subnet6.network or ip6.ip == subnet6.ip:
            return f"IPv6 address {ip6.ip} outside bridge '{nic.bridge}''s subnet {subnet6.network}"
    return None


def nic_findings(node, ctid: int, key: str, value: str, old: str | None = None) -> tuple[str | None, list[str]]:
    """(why the bridge is refused or None, what about the NIC needs ``VM.Config.Network``)."""
    try:
        nic = parse_nic(int(key[3:]), value)
        before = parse_nic(int(key[3:]), old) if old else None
    except EngineValidationError:
        return None, []  # the config parser reports a malformed value with its own message
    if nic.bridge and nic.bridge not in usable_bridges(node) and not (before and before.bridge == nic.bridge):
        return (
            f"bridge '{nic.bridge}' is neither managed by Caisson on node '{node.name}' nor allowed there by "
            f"an administrator (usable: {', '.join(usable_bridges(node)) or 'none'})"
        ), []
    needs = []
    if not nic.firewall and (before is None or before.firewall):
        needs.append("the firewall off")
    if nic.hwaddr and nic.hwaddr != generate_mac(ctid, nic.index) and nic.hwaddr != (before and before.hwaddr):
        needs.append(f"its own MAC address {nic.hwaddr}")
    bridge = managed_bridges(node).get(nic.bridge or "")
    same_address = before is not None and (before.ip, before.ip6, before.bridge) == (nic.ip, nic.ip6, nic.bridge)
    if bridge and not same_address:
        problem = _static_problem(nic, bridge)
        if problem:
            needs.append(problem)
    return None, needs


def check_nic_rights(
    access,
    node,
    ctid: int,
    nics: dict[str, str],
    old: dict[str, str] | None = None,
    obj=None,
    address: str | None = None,
) -> None:
    """Refuse NIC values (``{"net0": value}``) the user may not set on ``node`` for container ``ctid``.

    A bridge that may not be used at all is a ValidationError naming the key; the rest needs
    ``VM.Config.Network`` on ``obj`` (the container) or, for a container still to be made, on the node.
    """
    from webui.access import require

    old = old or {}
    errors, needs = {}, []
    for key, value in nics.items():
        refused, wanted = nic_findings(node, ctid, key, str(value), old.get(key))
        if refused:
            errors[key] = [refused]
        needs += [f"{key}: {what}" for what in wanted]
    if errors:
        raise ValidationError(errors)
    if needs:
        try:
            require(access, PRIVILEGE, obj, path=node.path, address=address)
        except PermissionDenied:
            raise PermissionDenied(
                f"permission denied: {PRIVILEGE} on {obj.path if obj else node.path} is required for {'; '.join(needs)}"
            ) from None


def set_allowed_bridges(access, node, names, address: str | None = None) -> list[str]:
    """Replace the host bridges an administrator allows on ``node`` (Sys.Modify on the node)."""
    import re

    from webui.access import audit, require

    require(access, "Sys.Modify", node, address=address)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValidationError({"allowed": ["a list of bridge names"]})
    bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}", n)]
    if bad:
        raise ValidationError(
            {"allowed": [f"'{bad[0]}' is not an interface name (at most 15 letters, digits, '_', '.', '-')"]}
        )
    node.allowed_bridges = sorted(set(names))
    node.save(update_fields=["allowed_bridges"])
    audit(access, "node.bridges", node.path, address, allowed=node.allowed_bridges)
    return node.allowed_bridges
