"""Container networking: veth pairs on the node's bridges, VLANs, rate limits, an address pool.

What the rest of the engine calls:

- at create and set, under ``pool.node_lock``: ``parse_nic`` each ``netN``,
  ``resolve`` (fills the MAC and ``ip=pool`` addresses, which are then
  persisted with ``Nic.to_value``), then ``validate`` before writing;
- at start: ``prepare_nics`` gives the ``StartSpec.prepare_late`` step (run while init builds its tree);
- after stop: ``teardown_nics``;
- on set while running: ``hotplug`` per changed interface;
- for status: ``interfaces``.

``tag=N`` on a bridge that is not VLAN-aware puts the interface on a per-tag
bridge ``<bridge>v<N>`` with VLAN devices of the bridge's ports, as Proxmox
does (``vlanbridge``); on a VLAN-aware bridge the tag is the port's PVID.

pyroute2 (about 130 ms) is imported only by ``netlink`` and only when a call
needs it; the package itself takes about 20 ms to import, so the engine should
import it inside the verbs that touch the network, not at module level.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import replace

from engine.errors import EngineError, ValidationError
from engine.network.bridges import Bridge, NodeNetwork
from engine.network.hotplug import hotplug
from engine.network.nics import Nic, check_names, from_config, generate_mac, host_veth, parse_nic, with_mac
from engine.network.pool import Others, allocate, check_collisions, claims, node_lock
from engine.network.veth import host_side, interfaces, prepare_nics, teardown_nics
from engine.network.vlanbridge import check as check_vlan

__all__ = [
    "Bridge",
    "Nic",
    "NodeNetwork",
    "from_config",
    "generate_mac",
    "host_side",
    "host_veth",
    "hotplug",
    "interfaces",
    "missing_bridges_allowed",
    "node_lock",
    "parse_nic",
    "prepare_nics",
    "resolve",
    "teardown_nics",
    "validate",
]

# While set (a restore), an interface on a bridge this node lacks is kept with a warning, as Proxmox does
# (the start then fails naming it); the list collects the warnings.
_MISSING_ALLOWED: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("missing_bridges", default=None)


@contextlib.contextmanager
def missing_bridges_allowed() -> Iterator[list[str]]:
    """Within the block, :func:`validate` accepts interfaces on bridges that do not exist here and lists a
    warning for each in the yielded list (an archive from another node names that node's bridges)."""
    warnings: list[str] = []
    token = _MISSING_ALLOWED.set(warnings)
    try:
        yield warnings
    finally:
        _MISSING_ALLOWED.reset(token)


def resolve(ctid: int, nics: list[Nic], node: NodeNetwork, others: Others) -> list[Nic]:
    """What the engine chooses for the caller, to be persisted: each MAC, and an address for ``ip=pool``.

    A pool address gets the bridge's address as gateway unless ``gw`` is given.
    """
    result = []
    drawn: dict[str, list[object]] = {}
    for nic in nics:
        nic = with_mac(ctid, nic)
        if nic.ip == "pool":
            if nic.bridge is None:
                raise ValidationError(f"{nic.key}: ip=pool needs a bridge with a pool", key=nic.key)
            bridge = _bridge(nic, node)
            check_vlan(nic, bridge)  # no pool address for a tag on a bridge that is not VLAN-aware
            taken = list(claims(bridge.name, others, exclude=ctid)) + drawn.setdefault(bridge.name, [])
            taken += [n.ipv4.ip for n in nics if n.bridge == bridge.name and n.ipv4 is not None]
            try:
                address = allocate(bridge, taken)
            except ValidationError as exc:
                raise ValidationError(f"{nic.key}: {exc}", key=nic.key) from None
            drawn[bridge.name].append(address.ip)
            nic = replace(nic, ip=str(address), gw=nic.gw or str(bridge.address.ip))
            parse_nic(nic.index, nic.to_value())  # a default gateway must still make sense
        result.append(nic)
    return result


def validate(ctid: int, nics: list[Nic], node: NodeNetwork, others: Others) -> None:
    """Everything about ``nics`` that needs the node: bridges exist and can carry the VLANs, no address or
    MAC is another container's on the same bridge (whatever the tag).  ``others``: the other containers'
    interfaces."""
    check_names(nics)
    bridges: dict[str, Bridge] = {}
    for nic in nics:
        if nic.ip == "pool":
            raise ValidationError(f"{nic.key}: ip=pool must be resolved to an address before it is stored", key=nic.key)
        if nic.bridge is None:
            if nic.tag or nic.trunks:
                raise ValidationError(f"{nic.key}: a VLAN tag needs a bridge", key=nic.key)
            continue
        allowed = _MISSING_ALLOWED.get()
        if allowed is not None and not node.exists(nic.bridge):
            allowed.append(
                f"{nic.key}: bridge '{nic.bridge}' does not exist on this node; the container "
                "will not start until it does (or the interface names another bridge)"
            )
            continue
        bridge = bridges[nic.bridge] = _bridge(nic, node)
        check_vlan(nic, bridge)
        if nic.mtu and bridge.mtu and nic.mtu > bridge.mtu:
            raise ValidationError(
                f"{nic.key}: mtu {nic.mtu} is above the MTU {bridge.mtu} of bridge '{bridge.name}'", key=nic.key
            )
    check_collisions(ctid, nics, others, bridges)


def _bridge(nic: Nic, node: NodeNetwork) -> Bridge:
    try:
        return node.bridge(nic.bridge or "")
    except EngineError as exc:
        raise ValidationError(f"{nic.key}: {exc}", key=nic.key) from None
