"""VLAN tags on bridges that are not VLAN-aware, the way Proxmox does it.

An interface with ``tag=N`` on a bridge without ``bridge-vlan-aware yes``
does not sit on that bridge: it sits on a per-tag bridge ``<bridge>v<N>``
(``vmbr0v10``), made on demand with the parent's MTU, whose other ports are a
VLAN device ``<port>.<N>`` of each of the parent's physical ports.  The
host keeps off it: no IPv6 link-local, no ARP replies for its addresses on
other interfaces (the parent's gateway address among them).  Frames
of the container leave through the port tagged N; containers of different
tags (and untagged ones, on the parent) share no layer 2 segment.  A parent
without ports still separates the tags; the containers of one tag then
reach each other on this node only.

The parent's ports are its ``bridge-ports`` when the interfaces file defines
it, else the ports it has on the host, container ends (``veth<ID>i<N>``,
Proxmox's ``tap``/``fwpr``/``fwln``) left out.

What the engine makes carries its mark in the interface alias (``ip link
show`` prints it): ``caisson: VLAN <N> of <parent>`` on the per-tag bridge,
``caisson: VLAN port of <per-tag bridge>`` on each VLAN device.  ``sweep``
removes a marked bridge once no port but the marked VLAN devices is left on
it, and marked VLAN devices that sit on no bridge; nothing unmarked is ever
removed.  A per-tag bridge already on the host without the mark (or one the
interfaces file defines) is used as it is, with no VLAN device added.  Every
step that makes, uses or removes a per-tag bridge runs under one host-wide
lock (``locked``), so a stop's sweep never takes a bridge a start is about
to use.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.errors import EngineError, HostError, NotSupported, ValidationError
from engine.network import netlink, rtnl
from engine.network.bridges import Bridge, NodeNetwork, stable_mac
from engine.network.nics import IFNAME_MAX, Nic
from engine.reverter import Reverter

SYS_NET = Path("/sys/class/net")
LOCK_PATH = "/run/lock/caisson-vlan.lock"
BRIDGE_MARK = "caisson: VLAN "  # + "<N> of <parent>"
PORT_MARK = "caisson: VLAN port of "  # + "<per-tag bridge>"
CONTAINER_END = re.compile(r"(veth|tap|fwln)\d+i\d+|fwpr\d+p\d+")
_TAGGED_NAME = re.compile(r".+v\d{1,4}")
_VLAN_NAME = re.compile(r".+\.\d{1,4}")
_held = threading.local()


# ---- names and checks (no kernel) ----------------------------------------------------------
def applies(nic: Nic, bridge: Bridge | None) -> bool:
    """Does this interface go on a per-tag bridge: a tag, on a bridge that is not VLAN-aware."""
    return bridge is not None and not bridge.vlan_aware and bool(nic.tag)


def bridge_name(parent: str, tag: int, key: str) -> str:
    """``<parent>v<tag>``; ValidationError if the kernel could not hold the name."""
    name = f"{parent}v{tag}"
    if len(name) > IFNAME_MAX:
        raise ValidationError(
            f"{key}: tag={tag} on bridge '{parent}' (not VLAN-aware) needs a bridge '{name}', "
            f"longer than the {IFNAME_MAX} characters of an interface name; use a bridge with a "
            "shorter name, or a VLAN-aware one",
            key=key,
        )
    return name


def device_name(port: str, tag: int, key: str, parent: str) -> str:
    """``<port>.<tag>``; ValidationError if the kernel could not hold the name."""
    name = f"{port}.{tag}"
    if len(name) > IFNAME_MAX:
        raise ValidationError(
            f"{key}: tag={tag} on bridge '{parent}' needs a VLAN device '{name}' on its port "
            f"'{port}', longer than the {IFNAME_MAX} characters of an interface name",
            key=key,
        )
    return name


def uplinks(bridge: Bridge) -> list[str]:
    """The parent's physical ports: ``bridge-ports`` from the file, else its ports on the host."""
    if bridge.defined:
        return list(bridge.ports)
    try:
        ports = sorted(os.listdir(SYS_NET / bridge.name / "brif"))
    except OSError:
        return []
    return [p for p in ports if not CONTAINER_END.fullmatch(p)]


def check(nic: Nic, bridge: Bridge) -> None:
    """A tagged (or trunked) interface on a bridge that is not VLAN-aware: what the per-tag bridge can carry.

    Trunks need VLAN filtering; DHCP and the address pool belong to the parent (the node's dnsmasq serves
    the untagged bridge only); the per-tag bridge's name and its VLAN devices' must fit.
    """
    key = nic.key
    if bridge.vlan_aware or not (nic.tag or nic.trunks):
        return
    if nic.trunks:
        raise ValidationError(
            f"{key}: trunks need a VLAN-aware bridge; '{bridge.name}' is not "
            "(bridge-vlan-aware yes); a plain tag=N works on it",
            key=key,
        )
    if nic.ip in ("dhcp", "pool"):
        raise ValidationError(
            f"{key}: ip={nic.ip} with tag={nic.tag} on bridge '{bridge.name}' (not VLAN-aware): "
            "the node's DHCP server and address pool serve the untagged bridge only; give a "
            "static address or drop the tag",
            key=key,
        )
    bridge_name(bridge.name, nic.tag, key)
    for port in uplinks(bridge):
        device_name(port, nic.tag, key, bridge.name)


# ---- the lock ------------------------------------------------------------------------------
@contextmanager
def locked() -> Iterator[None]:
    """The host-wide lock over per-tag bridges (a flock, released if the holder dies); re-entrant per thread."""
    if getattr(_held, "fd", None) is not None:
        yield
        return
    os.makedirs(os.path.dirname(LOCK_PATH), exist_ok=True)
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _held.fd = fd
        yield
    finally:
        _held.fd = None
        os.close(fd)


# ---- making ---------------------------------------------------------------------------------
def ensure(nic: Nic, parent: Bridge, node: NodeNetwork, revert: Reverter) -> Bridge:
    """The per-tag bridge for ``nic`` on ``parent``, made (or completed) now; call under ``locked``.

    What is made here is undone by ``revert`` (a sweep), so a plug that fails later leaves nothing.
    """
    check(nic, parent)
    tag, key = nic.tag, nic.key
    name = bridge_name(parent.name, tag, key)
    mtu = int(_sysfs(parent.name, "mtu") or parent.mtu or 1500)
    if name in node.bridges():  # the interfaces file defines it: the administrator's, used as it is
        return node.ensure_bridge(name)
    devices = [(port, device_name(port, tag, key, parent.name)) for port in uplinks(parent)]
    revert.add(sweep, [name])
    try:
        with netlink.host() as ipr:
            info = netlink.link(ipr, name)
            if info is None:
                index = netlink.create_bridge(ipr, name, False, mtu, None if devices else stable_mac(name))
                netlink.set_link(ipr, index, ifalias=f"{BRIDGE_MARK}{tag} of {parent.name}")
                _host_stays_off(name)
            elif info["kind"] != "bridge":
                raise ValidationError(
                    f"{key}: tag={tag} needs a bridge '{name}', but the host has an interface of "
                    "that name that is not a bridge",
                    key=key,
                )
            elif not _ours(name):
                return Bridge(name, mtu=info["mtu"], defined=False)  # not the engine's: used as it is
            else:
                index = info["index"]
            for port, device in devices:
                _ensure_device(ipr, nic, parent.name, name, index, port, device)
            netlink.set_link(ipr, index, state="up")
    except OSError as exc:
        raise HostError(f"{key}: VLAN bridge '{name}' for tag={tag} on '{parent.name}': {exc.strerror}") from None
    return Bridge(name, mtu=mtu, defined=False)


def _host_stays_off(bridge: str) -> None:
    """The host has no address on a per-tag bridge and must not seem to: no IPv6 link-local, and no ARP
    replies for the addresses of its other interfaces (the parent's among them), which it gives by default."""
    for path, value in (
        (f"/proc/sys/net/ipv6/conf/{bridge}/disable_ipv6", "1"),
        (f"/proc/sys/net/ipv4/conf/{bridge}/arp_ignore", "1"),
    ):
        try:
            Path(path).write_text(value)
        except OSError:
            pass  # no IPv6, or a read-only /proc/sys: nothing to switch off


def _ensure_device(ipr: Any, nic: Nic, parent: str, bridge: str, bridge_index: int, port: str, device: str) -> None:
    key = nic.key
    info = netlink.link(ipr, device)
    if info is None:
        port_info = netlink.link(ipr, port)
        if port_info is None:
            raise HostError(f"{key}: bridge '{parent}': port '{port}' does not exist")
        try:
            index = netlink.create_vlan(ipr, device, port_info["index"], nic.tag)
        except OSError as exc:
            if exc.errno == errno.EOPNOTSUPP:
                raise NotSupported(
                    f"{key}: tag={nic.tag} on bridge '{parent}' needs a VLAN device '{device}' on its "
                    "port, and this kernel has no 802.1Q VLAN devices (CONFIG_VLAN_8021Q); use a "
                    "bridge without ports for tags on this node only"
                ) from None
            raise
        netlink.set_link(ipr, index, ifalias=f"{PORT_MARK}{bridge}")
    elif _alias(device) != f"{PORT_MARK}{bridge}" and info["master"] != bridge_index:
        raise ValidationError(
            f"{key}: tag={nic.tag} on bridge '{parent}' needs the VLAN device '{device}', which "
            "the host already has and the engine did not make; remove it or put it on "
            f"bridge '{bridge}'",
            key=key,
        )
    else:
        index = info["index"]
    netlink.set_link(ipr, index, master=bridge_index, state="up")


# ---- removing -------------------------------------------------------------------------------
def sweep(names: list[str] | None = None) -> list[str]:
    """Remove the engine's per-tag bridges (all, or those ``names``) that no interface but the engine's VLAN
    devices uses, with those devices, and the engine's VLAN devices that sit on no bridge.  Returns the
    bridges removed.  Reads sysfs first and takes the lock only when there is something to remove."""
    if not any(_candidates(names)):
        return []
    removed = []
    with locked():
        bridges, orphans = _candidates(names)
        for bridge, devices in bridges.items():
            for device in devices:
                _delete(device)
            if _delete(bridge):
                removed.append(bridge)
        for device in orphans:
            _delete(device)
    return removed


def _candidates(names: list[str] | None) -> tuple[dict[str, list[str]], list[str]]:
    """(unused marked bridges -> their marked devices, marked devices on no bridge)."""
    try:
        present = os.listdir(SYS_NET) if names is None else [n for n in names if (SYS_NET / n).exists()]
    except OSError:
        return {}, []
    bridges: dict[str, list[str]] = {}
    orphans = []
    for name in present:
        if _TAGGED_NAME.fullmatch(name) and (SYS_NET / name / "bridge").is_dir() and _ours(name):
            try:
                ports = os.listdir(SYS_NET / name / "brif")
            except OSError:
                continue
            if all(_alias(port) == f"{PORT_MARK}{name}" for port in ports):
                bridges[name] = ports
        elif (
            names is None
            and _VLAN_NAME.fullmatch(name)
            and _alias(name).startswith(PORT_MARK)
            and not (SYS_NET / name / "master").exists()
        ):
            orphans.append(name)
    return (bridges, orphans) if bridges or orphans else ({}, [])


def _delete(name: str) -> bool:
    try:
        rtnl.request(rtnl.del_link(name))
    except OSError as exc:
        if exc.errno == errno.ENODEV:
            return False
        raise EngineError(f"removing VLAN interface '{name}': {exc.strerror}") from None
    return True


def _ours(name: str) -> bool:
    return _alias(name).startswith(BRIDGE_MARK) and not _alias(name).startswith(PORT_MARK)


def _alias(name: str) -> str:
    return _sysfs(name, "ifalias") or ""


def _sysfs(name: str, attribute: str) -> str | None:
    try:
        return (SYS_NET / name / attribute).read_text().strip()
    except OSError:
        return None
