"""A container's interfaces on the host: plug at start, unplug after stop, change while it runs.

Each interface is a veth pair.  The host end ``veth<ID>i<N>`` sits on the
bridge; the peer is created directly inside the container's network
namespace under its final name and MAC, in the same netlink request, so it
never appears on the host.  Everything the host keeps (the veth, its VLANs,
its shaping, the ifb) is the host end's, so deleting it is the whole
teardown, but for the per-tag bridges of ``tag=N`` on bridges that are not
VLAN-aware (``vlanbridge``), swept once no container uses them.  Every
multi-step change registers its undo in a Reverter.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from engine.errors import EngineError, ValidationError
from engine.network import netlink, rtnl, tc, vlanbridge
from engine.network.bridges import Bridge, NodeNetwork
from engine.network.nics import MAX_NICS, Nic, gateway_on_link, generate_mac, host_veth
from engine.reverter import Reverter

DEFAULT_MTU = 1500
LOOPBACK_INDEX = 1  # lo is the first interface of every network namespace
SYS_NET = Path("/sys/class/net")


def prepare_nics(
    ctid: int, nics: list[Nic], node: NodeNetwork, configure: bool = True, addresses: Callable[[], bool] | None = None
) -> Callable[[int], None]:
    """The start step (``StartSpec.prepare_late``, named "network") that plugs ``nics`` into a container.

    The step takes the pid of any process already in the container's network namespace (the start
    sequence passes its setup child's, before init exists).  Each peer is born inside, named, with
    its MAC (still down).  With ``configure`` the step also brings ``lo`` and the peers up and sets
    the static addresses and default routes from the host; the start sequence passes False and leaves that to
    ``configure_here``, run inside once the container's distribution is known, or configures from the
    host with ``addresses`` (asked then: whether to set the static addresses and routes).  On failure it
    removes what it made.
    """
    nics = list(nics)

    def network(pid: int) -> None:
        if not nics:
            return
        with Reverter() as revert:
            for nic in nics:  # a crashed run may have left one; the container is not running
                unplug(None, ctid, nic.index)
            ns_fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                with rtnl.open_socket() as sock:
                    inner = [plug(None, ctid, nic, node, ns_fd, revert, sock) for nic in nics]
            finally:
                os.close(ns_fd)
            if configure:
                with netlink.netns_rtnl(pid) as sock:
                    with step(None, "bringing lo up"):
                        rtnl.call(sock, [rtnl.set_up(LOOPBACK_INDEX)])
                    pairs = list(zip(nics, inner, strict=True))
                    configure_fresh(sock, pairs, addresses() if addresses is not None else True)
            revert.success()
        if any(nic.tag for nic in nics):
            vlanbridge.sweep()  # per-tag bridges a crash left empty

    return network


def configure_here(nics: list[Nic], addresses: bool = True) -> None:
    """Inside the container's network namespace (its init, before exec): each interface up, and with
    ``addresses`` its static addresses and default routes."""
    if not nics:
        return
    pairs = []
    for nic in nics:
        try:
            pairs.append((nic, socket.if_nametoindex(nic.name)))
        except OSError:
            raise EngineError(f"{nic.key}: '{nic.name}' is missing inside the container") from None
    with rtnl.open_socket() as sock:
        configure_fresh(sock, pairs, addresses)


def configure_fresh(sock: socket.socket, pairs: list[tuple[Nic, int]], addresses: bool = True) -> None:
    """Link up, addresses and default routes of freshly plugged interfaces, in one datagram."""
    requests: list[rtnl.Request] = []
    ignore: dict[int, tuple[int, ...]] = {}
    owner: list[Nic] = []
    for nic, index in pairs:
        requests.append(rtnl.set_up(index))
        owner.append(nic)
        if not addresses:
            continue
        for cidr in (nic.ipv4, nic.ipv6):
            if cidr is not None:
                ignore[len(requests)] = (errno.EEXIST,)
                requests.append(rtnl.new_address(index, str(cidr)))
                owner.append(nic)
        for version, gw in ((4, nic.gw), (6, nic.gw6)):
            if gw:
                requests.append(rtnl.default_route(index, gw, onlink=gateway_on_link(nic, version)))
                owner.append(nic)
    try:
        rtnl.call(sock, requests, ignore)
    except rtnl.RtnlError as exc:
        nic = owner[next(i for i, r in enumerate(requests) if r.what == exc.what)]
        raise EngineError(
            f"{nic.key}: configuring '{nic.name}' inside the container: {exc.what}: {exc.strerror}"
        ) from None


def teardown_nics(ctid: int, nics: list[Nic]) -> None:
    """After stop: remove the host ends (and their ifbs) that are left.  Idempotent.

    Every index is swept, not only ``nics``: the config may have changed while the container ran.  Then
    the per-tag bridges no container uses any more go (``vlanbridge.sweep``: sysfs reads, then rtnl).
    """
    indexes = sorted({nic.index for nic in nics} | set(range(MAX_NICS)))
    # Usually the kernel has cleaned up already: then no netlink here, and no pyroute2 import.
    if any(sysfs(name, "ifindex") for i in indexes for name in (host_veth(ctid, i), tc.ifb_name(ctid, i))):
        for index in indexes:
            unplug(None, ctid, index)
    vlanbridge.sweep()


def unplug(ipr: Any, ctid: int, index: int) -> None:
    """Remove one interface: its host end (the peer inside goes with it) and its ifb.  ``ipr`` is unused
    (kept for the callers that hold a pyroute2 handle): the deletions go through ``rtnl``."""
    for name in (host_veth(ctid, index), tc.ifb_name(ctid, index)):
        if sysfs(name, "ifindex"):
            delete_link(name)


def delete_link(name: str) -> bool:
    """Delete a host interface by name; False if it was not there."""
    try:
        rtnl.request(rtnl.del_link(name))
    except OSError as exc:
        if exc.errno == errno.ENODEV:
            return False
        raise
    return True


def interfaces(init_pid: int) -> list[dict]:
    """What the container sees: name, mac, mtu, state, ipv4, ipv6 and traffic counters per interface."""
    with netlink.netns(init_pid) as ns:
        return netlink.dump_interfaces(ns)


def host_side(ctid: int, index: int) -> dict | None:
    """The host end as the kernel has it (bridge, state, mtu, rate limits in bytes/s), or None."""
    with netlink.host() as ipr:
        info = netlink.link(ipr, host_veth(ctid, index))
        if info is None:
            return None
        master = SYS_NET / info["name"] / "master"
        return {
            "name": info["name"],
            "bridge": master.resolve().name if master.exists() else None,
            "up": info["up"],
            "mtu": info["mtu"],
            "rate": tc.limits(ipr, ctid, index, info["index"]),
        }


# ---- steps, shared with hotplug -----------------------------------------------------------
@contextmanager
def step(nic: Nic | None, what: str) -> Iterator[None]:
    """Name the interface and the step in any kernel error."""
    try:
        yield
    except OSError as exc:
        prefix = f"{nic.key}: " if nic else ""
        raise EngineError(f"{prefix}{what}: {exc.strerror or exc}") from None


def nic_bridge(nic: Nic, node: NodeNetwork) -> Bridge | None:
    """The bridge ``nic`` names (the parent, for a tag on a bridge that is not VLAN-aware), made if defined."""
    if nic.bridge is None:
        if nic.tag or nic.trunks:
            raise ValidationError(f"{nic.key}: a VLAN tag needs a bridge", key=nic.key)
        return None
    try:
        bridge = node.ensure_bridge(nic.bridge)
    except ValidationError as exc:
        raise ValidationError(f"{nic.key}: {exc}", key=nic.key) from None
    except EngineError as exc:
        raise type(exc)(f"{nic.key}: {exc}") from None
    vlanbridge.check(nic, bridge)
    return bridge


def attach_to(nic: Nic, bridge: Bridge | None, node: NodeNetwork, revert: Reverter) -> Bridge | None:
    """The bridge the host end goes on: ``bridge``, or its per-tag bridge (made now; the caller holds
    ``vlanbridge.locked`` until the veth is on it)."""
    if not vlanbridge.applies(nic, bridge):
        return bridge
    return vlanbridge.ensure(nic, bridge, node, revert)


def tagged_lock(nic: Nic, bridge: Bridge | None):
    return vlanbridge.locked() if vlanbridge.applies(nic, bridge) else nullcontext()


def nic_mac(ctid: int, nic: Nic) -> str:
    return (nic.hwaddr or generate_mac(ctid, nic.index)).upper()


def nic_mtu(nic: Nic, bridge: Bridge | None) -> tuple[int, int | None]:
    """(the interface's MTU, the bridge's index): the bridge's MTU unless the nic sets one it can carry."""
    if bridge is None:
        return nic.mtu or DEFAULT_MTU, None
    index, mtu = sysfs(bridge.name, "ifindex"), sysfs(bridge.name, "mtu")
    if index is None or mtu is None:
        raise ValidationError(f"{nic.key}: bridge '{bridge.name}' does not exist", key=nic.key)
    if nic.mtu and nic.mtu > int(mtu):
        raise ValidationError(f"{nic.key}: mtu {nic.mtu} is above the MTU {mtu} of bridge '{bridge.name}'", key=nic.key)
    return nic.mtu or int(mtu), int(index)


def sysfs(name: str, attribute: str) -> str | None:
    """A host interface's attribute from sysfs: far cheaper than a netlink round trip through pyroute2."""
    try:
        return (SYS_NET / name / attribute).read_text().strip()
    except OSError:
        return None


def plug(
    ipr: Any, ctid: int, nic: Nic, node: NodeNetwork, ns_fd: int, revert: Reverter, sock: socket.socket | None = None
) -> int:
    """Host side of one interface: veth (peer inside, still down), bridge port, VLANs, rate.  Returns the peer's index.

    The pair is one rtnetlink request on ``sock`` (or a fresh socket); pyroute2 (``ipr``, or this
    thread's cached handle) is used only for VLANs, per-tag bridges and rate limits.
    """
    bridge = nic_bridge(nic, node)
    host = host_veth(ctid, nic.index)
    with tagged_lock(nic, bridge):
        bridge = attach_to(nic, bridge, node, revert)
        mtu, bridge_index = nic_mtu(nic, bridge)
        create = rtnl.new_veth(
            host, _host_mac(), nic.name, nic_mac(ctid, nic), mtu, ns_fd, bridge_index, host_up=not nic.link_down
        )
        try:
            if sock is None:
                rtnl.request(create)
            else:
                rtnl.call(sock, [create])
        except OSError as exc:
            where = f"host interface '{host}'" if sysfs(host, "ifindex") else f"'{nic.name}' inside the container"
            raise EngineError(f"{nic.key}: creating {where}: {exc.strerror}") from None
        revert.add(delete_link, host)
    _no_ipv6(host)
    if (bridge is not None and bridge.vlan_aware) or nic.rate:
        index = socket.if_nametoindex(host)
        with netlink.host() if ipr is None else nullcontext(ipr) as handle:
            with step(nic, f"VLAN on bridge '{nic.bridge}'"):
                set_vlans(handle, index, bridge, None, nic)
            if nic.rate:
                revert.add(delete_link, tc.ifb_name(ctid, nic.index))
                with step(nic, f"rate limit {nic.rate:g} MB/s"):
                    tc.apply(handle, ctid, nic.index, index, nic.rate, fresh=True)
    return int(sysfs(host, "iflink") or 0)  # a veth's iflink is its peer's index, in the peer's namespace


def configure_inside(ns: Any, nic: Nic, old: Nic | None = None, index: int | None = None) -> None:
    """Inside the namespace: link up, static addresses, default routes (``old``'s are removed first)."""
    with step(nic, f"configuring '{nic.name}' inside the container"):
        if not index:
            info = netlink.link(ns, nic.name)
            if info is None:
                raise EngineError(f"{nic.key}: '{nic.name}' is missing inside the container")
            index = info["index"]
        if old is not None:
            for gw, new_gw in ((old.gw, nic.gw), (old.gw6, nic.gw6)):
                if gw and gw != new_gw:
                    netlink.default_route(ns, index, gw, add=False)
            for cidr, new_cidr in ((old.ipv4, nic.ipv4), (old.ipv6, nic.ipv6)):
                if cidr is not None and cidr != new_cidr:
                    netlink.del_address(ns, index, str(cidr))
        netlink.set_link(ns, index, state="up")
        for cidr in (nic.ipv4, nic.ipv6):
            if cidr is not None:
                netlink.add_address(ns, index, str(cidr), exist_ok=True)
        for gw in (nic.gw, nic.gw6):
            if gw:
                netlink.default_route(ns, index, gw, add=True)


def set_vlans(ipr: Any, port: int, bridge: Bridge | None, old: Nic | None, new: Nic) -> None:
    """Make the port's VLANs those of ``new``: its tag as untagged PVID, its trunks tagged."""
    if bridge is None or not bridge.vlan_aware:
        return
    default = _default_pvid(bridge.name)
    old_pvid = (old.tag if old else None) or default
    new_pvid = new.tag or default
    for lo, hi in old.trunks if old else ():
        netlink.bridge_vlan(ipr, port, _vid(lo, hi), add=False)
    if old_pvid and old_pvid != new_pvid:
        netlink.bridge_vlan(ipr, port, old_pvid, add=False)
    for lo, hi in new.trunks:
        netlink.bridge_vlan(ipr, port, _vid(lo, hi), add=True)
    if new_pvid:
        netlink.bridge_vlan(ipr, port, new_pvid, add=True, pvid=True)


def _default_pvid(bridge: str) -> int:
    try:
        return int(Path(f"/sys/class/net/{bridge}/bridge/default_pvid").read_text())
    except (OSError, ValueError):
        return 1


def _vid(lo: int, hi: int) -> int | str:
    return lo if lo == hi else f"{lo}-{hi}"


def _host_mac() -> str:
    """A random, locally administered MAC starting FE: a bridge takes the lowest MAC of its ports as its
    own, and FE keeps the host ends from moving it (LXC's choice)."""
    return "FE:" + ":".join(f"{b:02X}" for b in os.urandom(5))


def _no_ipv6(host: str) -> None:
    """The host end needs no address of its own: no link-local, no router solicitations (as Proxmox does)."""
    try:
        Path(f"/proc/sys/net/ipv6/conf/{host}/disable_ipv6").write_text("1")
    except OSError:
        pass
