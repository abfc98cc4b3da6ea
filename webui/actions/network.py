"""A node's network (Proxmox's node Network panel): create, edit, delete a bridge, apply the file.

Each change is a job the node's agent runs (the web tier has no root); the fields are checked here first
by the engine's own checks, so a bad one is refused at once naming its field, and the node's bridges and
interfaces are read from the mirror (``Node.info``), never from the host.  Sys.Modify on the node, as
Proxmox's ``PUT/POST/DELETE /nodes/{node}/network``.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError

from engine.errors import ValidationError as EngineValidationError
from webui.access import Access, require
from webui.models import Job, Node
from webui.models.queue import submit
from webui.nic_rights import managed_bridges

FIELDS = ("address", "address6", "ports", "vlan_aware", "vids", "mtu", "pool", "dhcp", "nat")


def host_interfaces(node: Node) -> dict[str, dict]:
    """The node's other interfaces as its agent last reported them (name -> kind, master)."""
    rows = (node.info or {}).get("interfaces", [])
    return {r["name"]: r for r in rows if isinstance(r, dict) and r.get("name")}


def check_fields(node: Node, name: str, fields: dict, create: bool) -> dict:
    """The fields, checked against the engine's rules and the node's mirrored interfaces; returns them clean."""
    from engine.network.bridge_edit import bridge_from_fields

    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise ValidationError({key: [f"unknown field (fields: {', '.join(FIELDS)})"] for key in unknown})
    try:
        bridge = bridge_from_fields(name, fields)
    except EngineValidationError as exc:
        raise ValidationError({exc.key or "name": [str(exc)]}) from None
    managed, others = managed_bridges(node), host_interfaces(node)
    if create and name in managed:
        raise ValidationError({"name": [f"bridge '{name}' already exists on node '{node.name}'"]})
    if create and name in others:
        raise ValidationError({"name": [f"node '{node.name}' already has an interface '{name}'"]})
    if not create and name not in managed:
        raise ValidationError({"name": [f"node '{node.name}' defines no bridge '{name}'"]})
    for port in bridge.ports:
        info = others.get(port)
        if info is None:
            raise ValidationError({"ports": [f"node '{node.name}' has no interface '{port}'"]})
        if info["kind"] == "bridge":
            raise ValidationError({"ports": [f"'{port}' is a bridge; a bridge's ports are other interfaces"]})
        owner = info.get("master") or next((b for b, d in managed.items() if port in d.get("ports", [])), None)
        if owner and owner != name:
            raise ValidationError({"ports": [f"'{port}' already belongs to bridge '{owner}'"]})
    return {
        "address": str(bridge.address) if bridge.address else "",
        "address6": str(bridge.address6) if bridge.address6 else "",
        "ports": bridge.ports,
        "vlan_aware": bridge.vlan_aware,
        "vids": bridge.vids if bridge.vlan_aware else "",
        "mtu": bridge.mtu,
        "pool": f"{bridge.pool[0]}-{bridge.pool[1]}" if bridge.pool else "",
        "dhcp": f"{bridge.dhcp[0]}-{bridge.dhcp[1]}" if bridge.dhcp else "",
        "nat": bridge.nat,
    }


def bridge_job(access: Access, node: Node, name: str, fields: dict, create: bool, address: str | None = None) -> Job:
    """Create (``create``) or redefine a bridge; an edit replaces the whole definition, as Proxmox's PUT."""
    require(access, "Sys.Modify", node, address=address)
    clean = check_fields(node, name, fields, create)
    params = {"op": "create" if create else "edit", "fields": clean}
    return submit("bridgeset", node, node.path, name, user=access.user, params=params, address=address)


def delete_job(access: Access, node: Node, name: str, address: str | None = None) -> Job:
    require(access, "Sys.Modify", node, address=address)
    if name not in managed_bridges(node):
        raise ValidationError({"name": [f"node '{node.name}' defines no bridge '{name}'"]})
    return submit("bridgedel", node, node.path, name, user=access.user, address=address)


def apply_job(access: Access, node: Node, address: str | None = None) -> Job:
    require(access, "Sys.Modify", node, address=address)
    return submit("netapply", node, node.path, "networking", user=access.user, address=address)
