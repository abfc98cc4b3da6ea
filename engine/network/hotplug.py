"""Changing a running container's interfaces: add, remove, or change one in place, with no restart.

In place: bridge, VLANs, MTU, rate, link state, addresses and routes.  A new
tag on a bridge that is not VLAN-aware moves the host end to the other
per-tag bridge (``vlanbridge``), and the one it leaves goes once unused.  A
new name or MAC re-creates the interface (the container sees it go and come
back).  Each step registers its inverse, so a change that fails half-way
puts back what it had done.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

from engine.errors import ValidationError
from engine.network import netlink, tc, vlanbridge
from engine.network.bridges import Bridge, NodeNetwork
from engine.network.nics import Nic, host_veth
from engine.network.veth import (
    SYS_NET,
    attach_to,
    configure_inside,
    nic_bridge,
    nic_mac,
    nic_mtu,
    plug,
    set_vlans,
    step,
    sysfs,
    tagged_lock,
    unplug,
)
from engine.reverter import Reverter


def hotplug(ctid: int, init_pid: int, old: Nic | None, new: Nic | None, node: NodeNetwork) -> None:
    """Add (old None), remove (new None) or change an interface of a running container, without restart."""
    if old is None and new is None:
        return
    if new is None:
        with netlink.host() as ipr:
            unplug(ipr, ctid, old.index)
        vlanbridge.sweep()
        return
    if old is not None and old.index != new.index:
        raise ValidationError(f"{new.key}: a change keeps its index (got {old.key})", key=new.key)
    with netlink.host() as ipr, netlink.netns(init_pid) as ns:
        plugged = sysfs(host_veth(ctid, new.index), "ifindex") is not None
        same_link = old is not None and old.name == new.name and nic_mac(ctid, old) == nic_mac(ctid, new)
        if old is not None and plugged and same_link:
            _change(ipr, ns, ctid, old, new, node)
            vlanbridge.sweep()  # the per-tag bridge it left, if no one else is on it
            return
        if old is None and plugged:
            raise ValidationError(f"{new.key}: the container already has this interface", key=new.key)
        with Reverter() as revert:
            if old is not None and plugged:  # a new name or MAC: plug it anew, the old one back on failure
                unplug(ipr, ctid, old.index)
                revert.add(_replug, ipr, ns, ctid, old, node, init_pid)
            if netlink.link(ns, new.name) is not None:
                raise ValidationError(
                    f"{new.key}: the container already has an interface named '{new.name}'", key=new.key
                )
            _replug(ipr, ns, ctid, new, node, init_pid)
            revert.success()
    vlanbridge.sweep()


def _replug(ipr: Any, ns: Any, ctid: int, nic: Nic, node: NodeNetwork, pid: int) -> None:
    with Reverter() as revert:
        ns_fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            peer = plug(ipr, ctid, nic, node, ns_fd, revert)
        finally:
            os.close(ns_fd)
        configure_inside(ns, nic, index=peer)
        revert.success()


def _change(ipr: Any, ns: Any, ctid: int, old: Nic, new: Nic, node: NodeNetwork) -> None:
    """Change a plugged interface in place; on failure every step already taken is put back."""
    host = netlink.link(ipr, host_veth(ctid, new.index))
    index = host["index"]
    with Reverter() as revert:
        parent = nic_bridge(new, node)
        old_bridge = _attached(host["name"], old, node)
        with tagged_lock(new, parent):
            bridge = attach_to(new, parent, node, revert)
            mtu, bridge_index = nic_mtu(new, bridge)
            if (old_bridge.name if old_bridge else None) != (bridge.name if bridge else None):
                with step(new, f"moving to bridge '{bridge.name if bridge else None}'"):
                    netlink.set_link(ipr, index, master=bridge_index or 0)
                    revert.add(_move, ipr, index, old, old_bridge)
                    set_vlans(ipr, index, bridge, None, new)
            elif (old.tag, old.trunks) != (new.tag, new.trunks):
                with step(new, f"VLAN on bridge '{new.bridge}'"):
                    revert.add(set_vlans, ipr, index, bridge, new, old)
                    set_vlans(ipr, index, bridge, old, new)
        if mtu != host["mtu"]:
            with step(new, f"mtu {mtu}"):
                inner = netlink.link(ns, old.name)["index"]
                revert.add(partial(netlink.set_link, ns, inner, mtu=host["mtu"]))
                revert.add(partial(netlink.set_link, ipr, index, mtu=host["mtu"]))
                netlink.set_link(ipr, index, mtu=mtu)
                netlink.set_link(ns, inner, mtu=mtu)
        if old.rate != new.rate:
            with step(new, f"rate limit {new.rate or 0:g} MB/s"):
                revert.add(tc.apply, ipr, ctid, old.index, index, old.rate)
                tc.apply(ipr, ctid, new.index, index, new.rate)
        if old.link_down != new.link_down:
            with step(new, "link state"):
                revert.add(partial(netlink.set_link, ipr, index, state="down" if old.link_down else "up"))
                netlink.set_link(ipr, index, state="down" if new.link_down else "up")
        if (old.ip, old.gw, old.ip6, old.gw6) != (new.ip, new.gw, new.ip6, new.gw6):
            revert.add(configure_inside, ns, old, new)
            configure_inside(ns, new, old)
        revert.success()


def _attached(host: str, old: Nic, node: NodeNetwork) -> Bridge | None:
    """The bridge the host end is on now: the old nic's bridge, its per-tag bridge, or another one."""
    master = SYS_NET / host / "master"
    name = master.resolve().name if master.exists() else None
    if name is None:
        return None
    if name == old.bridge:
        return node.bridge(name)
    return Bridge(name, defined=False)  # a per-tag bridge: no VLAN filtering


def _move(ipr: Any, index: int, nic: Nic, bridge: Bridge | None) -> None:
    """Undo of a bridge change: back on the old bridge with the old VLANs."""
    info = netlink.link(ipr, bridge.name) if bridge else None
    netlink.set_link(ipr, index, master=info["index"] if info else 0)
    set_vlans(ipr, index, bridge, None, nic)
