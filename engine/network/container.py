"""What a container's life needs from the network layer, in the order the lifecycle calls it.

- ``configure`` at create and set: MACs and pool addresses chosen, everything
  checked against the node and the other containers, before the config is written;
- ``start_steps`` at start: the firewall first (so no packet passes unfiltered),
  then the veth plumbing, both as host-side prepare steps;
- ``reconfigure`` on set while running: hot-plug and a live firewall reload;
- ``stopped`` after stop: host leftovers, firewall chains and DHCP leases removed.

The per-container firewall lives in ``<root>/firewall/<ID>.fw`` (Proxmox's
format). With ``firewall=1`` on an interface and no file, anti-spoofing still
applies (the container may send only from its MAC and addresses) and traffic
is otherwise allowed both ways.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from engine.config import ContainerConfig
from engine.network import firewall
from engine.network.bridges import Bridge, NodeNetwork
from engine.network.dhcp import DhcpServer
from engine.network.fwcompile import policy_for
from engine.network.hotplug import hotplug
from engine.network.nics import Nic, from_config, host_veth, parse_nic
from engine.network.pool import node_lock
from engine.network.veth import interfaces, prepare_nics, teardown_nics

log = logging.getLogger(__name__)
NET_KEYS = {f"net{i}" for i in range(10)}


def configure(root: Path, ctid: int, config: ContainerConfig, others: dict[int, ContainerConfig]) -> None:
    """Fill in generated MACs and ``ip=pool`` addresses and check every interface; the caller writes."""
    from engine.network import resolve, validate

    nics = from_config(config)
    if not nics:
        return
    node = NodeNetwork(root)
    with node_lock(root):
        other_nics = {c: from_config(other) for c, other in others.items() if c != ctid}
        resolved = resolve(ctid, nics, node, other_nics)
        validate(ctid, resolved, node, other_nics)
    for nic in resolved:
        config.set(nic.key, nic.to_value())


def firewall_file(root: Path, ctid: int) -> Path:
    return root / "firewall" / f"{ctid}.fw"


def _policy(root: Path, ctid: int) -> firewall.FirewallPolicy:
    """The container's file with the datacenter's (``engine.network.fwcompile``); what cannot be enforced
    is logged and skipped, as pve-firewall skips it."""
    compiled = policy_for(root, ctid)
    for warning in compiled.warnings:
        log.warning("firewall of CT %s: %s", ctid, warning)
    return compiled.policy


def _ports(ctid: int, nics: list[Nic], node: NodeNetwork) -> list[firewall.Port]:
    ports = []
    for nic in nics:
        ipv4 = [str(nic.ipv4)] if nic.ipv4 is not None else []
        if nic.ip == "dhcp" and nic.bridge and node.present(nic.bridge):
            bridge = node.bridge(nic.bridge)
            if bridge.address is not None:
                # The lease is not known before the container asks for it: allow the bridge's subnet.
                ipv4 = [str(bridge.address.network)]
        ipv6 = [str(nic.ipv6)] if nic.ipv6 is not None else []
        ports.append(firewall.Port(host_veth(ctid, nic.index), nic.hwaddr, ipv4, ipv6, nic.firewall))
    return ports


def _apply_firewall(root: Path, ctid: int, nics: list[Nic], node: NodeNetwork) -> None:
    if any(nic.firewall for nic in nics):
        firewall.apply(ctid, _ports(ctid, nics, node), _policy(root, ctid))
    else:
        firewall.remove(ctid)


def dhcp_server(root: Path, node: NodeNetwork, bridge_name: str) -> DhcpServer | None:
    return bridge_dhcp_server(root, node.bridge(bridge_name))


def bridge_dhcp_server(root: Path, bridge: Bridge) -> DhcpServer | None:
    """The DHCP server of that bridge definition (None without a range); bridge_edit stops an old one's."""
    if bridge.dhcp is None or bridge.address is None:
        return None
    # dnsmasq runs as its own user: its state dir must sit under directories that user can search.
    state = Path(os.environ.get("CAISSON_DHCP_DIR", root / "dhcp"))
    return DhcpServer(
        bridge.name, bridge.address.network, bridge.dhcp[0], bridge.dhcp[1], state, router=str(bridge.address.ip)
    )


def start_steps(root: Path, ctid: int, config: ContainerConfig, distro_step=None) -> list:
    """The prepare steps of a start: firewall, then interfaces (each a callable(pid)).

    With ``distro_step`` (the distribution's files written from the host, ``engine.distro.host_step``,
    run before these), the interfaces are also brought up and, unless the family's own networking sets
    them, given their static addresses and routes from the host: no :func:`inside_step` is needed."""
    nics = from_config(config)
    if not nics:
        return []
    node = NodeNetwork(root)

    def firewall_rules(pid: int) -> None:
        firewall.apply(ctid, _ports(ctid, nics, node), _policy(root, ctid))

    def dhcp(pid: int) -> None:
        for bridge in sorted({nic.bridge for nic in nics if nic.ip == "dhcp" and nic.bridge}):
            node.ensure_bridge(bridge)
            server = dhcp_server(root, node, bridge)
            if server is None:
                raise ValueError(f"bridge '{bridge}' has no caisson-dhcp range; an interface asks for ip=dhcp")
            server.start()

    steps = [firewall_rules] if any(nic.firewall for nic in nics) else []
    if distro_step is None:
        steps.append(prepare_nics(ctid, nics, node, configure=False))  # addresses: by ``inside_step``
    else:
        host_managed = any(n.host_managed for n in nics)
        steps.append(
            prepare_nics(
                ctid,
                nics,
                node,
                addresses=lambda: host_managed or not getattr(distro_step, "configures_addresses", False),
            )
        )
    if any(nic.ip == "dhcp" for nic in nics):
        steps.append(dhcp)
    return steps


def inside_step(ctid: int, config: ContainerConfig, distro_step=None):
    """The start step run inside the container before its init (``StartSpec.extra_setup``), after the
    distribution's files (``engine.distro.start_step``, given as ``distro_step``: it tells whether the
    family's own networking sets addresses): the links up and, unless the distribution's own networking
    sets them, the static addresses and default routes.  None if there is nothing to do."""
    from engine.network.veth import configure_here

    nics = from_config(config)
    if not nics:
        return None
    ostype = config.current.values.get("ostype")
    # host-managed=1 (Proxmox 9.1, set on an application container's NICs): no network stack runs inside
    host_managed = any(n.host_managed for n in nics)

    def network_inside() -> None:
        family_sets = getattr(distro_step, "configures_addresses", None)  # set once the distro step ran
        if family_sets is None:
            from engine import distro

            family_sets = distro.configures_addresses(ostype)
        configure_here(nics, addresses=host_managed or not family_sets)

    return network_inside


def reconfigure(root: Path, ctid: int, pid: int, old: ContainerConfig, new: ContainerConfig) -> list[str]:
    """Apply changed interfaces to a running container; returns the keys applied live."""
    node = NodeNetwork(root)
    live = []
    for key in sorted(NET_KEYS):
        before, after = old.current.values.get(key), new.current.values.get(key)
        if before == after:
            continue
        index = int(key[3:])
        hotplug(
            ctid, pid, parse_nic(index, before) if before else None, parse_nic(index, after) if after else None, node
        )
        live.append(key)
    if live:
        _apply_firewall(root, ctid, from_config(new), node)
    return live


def reload_firewall(root: Path, ctid: int, config: ContainerConfig) -> None:
    _apply_firewall(root, ctid, from_config(config), NodeNetwork(root))


def stopped(root: Path, ctid: int, config: ContainerConfig) -> None:
    """After the container stopped: nothing of its network may remain on the host."""
    nics = from_config(config)
    if not nics:
        return
    teardown_nics(ctid, nics)
    if any(nic.firewall for nic in nics):
        firewall.remove(ctid)
    node = NodeNetwork(root)
    for nic in nics:
        if nic.ip == "dhcp" and nic.bridge and nic.hwaddr and node.present(nic.bridge):
            server = dhcp_server(root, node, nic.bridge)
            if server is not None:
                server.release(nic.hwaddr)


__all__ = [
    "NET_KEYS",
    "configure",
    "firewall_file",
    "inside_step",
    "interfaces",
    "reconfigure",
    "reload_firewall",
    "start_steps",
    "stopped",
]
