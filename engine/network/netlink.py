"""Every netlink call of the engine, through pyroute2.

pyroute2 costs about 130 ms to import, so it is imported inside the
functions: verbs that never touch the network never pay for it.  A handle on
the host's namespace is cached per thread (a node agent reuses one socket
for every start); ``host(cached=False)`` and ``netns()`` give context-managed
handles that are closed on exit.  A handle inside a container's namespace is
a netlink socket opened by a short-lived thread that joined the namespace
with setns(2), which costs well under a millisecond, where pyroute2's own
``netns=`` forks a helper process.  Netlink errors leave as OSError with the
kernel's errno, so callers name what failed without knowing pyroute2.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

IFF_UP = 0x1
NETLINK_ROUTE = 0
_local = threading.local()


def checked[F: Callable[..., Any]](func: F) -> F:
    """Turn pyroute2's NetlinkError into OSError(errno) so no caller imports pyroute2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            return func(*args, **kwargs)
        except NetlinkError as exc:
            raise OSError(exc.code, os.strerror(exc.code)) from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def host(cached: bool = True) -> Iterator[Any]:
    """An IPRoute on the host's namespace: this thread's cached one, or a fresh one closed on exit."""
    from pyroute2 import IPRoute

    if not cached:
        with IPRoute(groups=0) as ipr:
            yield ipr
        return
    entry = getattr(_local, "host", None)
    if entry is None or entry[0] != os.getpid():  # none yet, or inherited across fork: never share a socket
        entry = _local.host = (os.getpid(), IPRoute(groups=0))
    try:
        yield entry[1]
    except OSError as exc:
        if exc.errno in (9, 32, 104, 107):  # EBADF EPIPE ECONNRESET ENOTCONN: the socket itself is broken
            close_cached()
        raise


def close_cached() -> None:
    """Drop this thread's cached host handle (tests, or a process about to exit)."""
    entry = getattr(_local, "host", None)
    _local.host = None
    if entry is not None and entry[0] == os.getpid():
        entry[1].close()


@contextmanager
def netns(pid: int) -> Iterator[Any]:
    """An IPRoute inside the network namespace of process ``pid``."""
    from pyroute2 import IPRoute

    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        sock = _socket_in(fd)
    finally:
        os.close(fd)
    with IPRoute(fileno=sock.detach(), groups=0) as ipr:
        yield ipr


@contextmanager
def netns_rtnl(pid: int) -> Iterator[Any]:
    """A plain route netlink socket (for ``engine.network.rtnl``) inside the network namespace of ``pid``."""
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        sock = _socket_in(fd)
    finally:
        os.close(fd)
    with sock:
        yield sock


def _socket_in(ns_fd: int) -> Any:
    """A netlink socket born in another namespace: setns(2) affects only the thread that calls it."""
    import socket

    result: list[Any] = []

    def run() -> None:
        try:
            os.setns(ns_fd, os.CLONE_NEWNET)
            result.append(socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            result.append(exc)

    thread = threading.Thread(target=run, name="netns-socket")
    thread.start()
    thread.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


# ---- links ---------------------------------------------------------------------------------
@checked
def link(ipr: Any, name: str) -> dict | None:
    """Facts about one interface, or None if there is none of that name."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        msg = ipr.link("get", ifname=name)[0]
    except NetlinkError as exc:
        if exc.code == 19:  # ENODEV
            return None
        raise
    info = msg.get_attr("IFLA_LINKINFO")
    data = info.get_attr("IFLA_INFO_DATA") if info else None
    return {
        "index": msg["index"],
        "name": name,
        "kind": info.get_attr("IFLA_INFO_KIND") if info else None,
        "mtu": msg.get_attr("IFLA_MTU"),
        "master": msg.get_attr("IFLA_MASTER"),
        "up": bool(msg["flags"] & IFF_UP),
        "mac": msg.get_attr("IFLA_ADDRESS"),
        "vlan_filtering": bool(data.get_attr("IFLA_BR_VLAN_FILTERING"))
        if data is not None and info.get_attr("IFLA_INFO_KIND") == "bridge"
        else False,
    }


@checked
def delete_link(ipr: Any, name: str) -> bool:
    """Delete an interface by name; False if it was not there (teardown is idempotent)."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        ipr.link("del", ifname=name)
    except NetlinkError as exc:
        if exc.code == 19:
            return False
        raise
    return True


@checked
def set_link(ipr: Any, index: int, **changes: Any) -> None:
    """Change an interface: state="up"/"down", mtu, address, ifname, ifalias, master (0 detaches)."""
    ipr.link("set", index=index, **changes)


@checked
def create_bridge(ipr: Any, name: str, vlan_filtering: bool, mtu: int, mac: str | None) -> int:
    """A bridge with STP off and its MTU pinned: set through the driver (not at creation), so a port with a
    smaller MTU, such as a container's veth with ``mtu=1400``, no longer lowers the whole bridge."""
    extra: dict[str, Any] = {"br_vlan_filtering": 1} if vlan_filtering else {}
    if mac:
        extra["address"] = mac
    ipr.link("add", ifname=name, kind="bridge", br_stp_state=0, br_forward_delay=0, **extra)
    index = ipr.link("get", ifname=name)[0]["index"]
    ipr.link("set", index=index, mtu=mtu - 1)  # an unchanged MTU would not reach the driver
    ipr.link("set", index=index, mtu=mtu)
    return index


@checked
def create_vlan(ipr: Any, name: str, port: int, vid: int) -> int:
    """``ip link add link <port> name <name> type vlan id <vid>`` (802.1Q), down; returns its index."""
    ipr.link("add", ifname=name, kind="vlan", link=port, vlan_id=vid)
    return ipr.link("get", ifname=name)[0]["index"]


@checked
def set_vlan_filtering(ipr: Any, index: int, on: bool) -> None:
    ipr.link("set", index=index, kind="bridge", br_vlan_filtering=1 if on else 0)


@checked
def create_ifb(ipr: Any, name: str) -> int:
    ipr.link("add", ifname=name, kind="ifb", state="up")
    return ipr.link("get", ifname=name)[0]["index"]


@checked
def bridge_vlan(ipr: Any, index: int, vid: int | str, add: bool, pvid: bool = False, self_: bool = False) -> None:
    """``bridge vlan add|del vid <vid> dev <port> [pvid untagged] [self]``; vid may be a range "2-4094"."""
    info: dict[str, Any] = {"vid": vid}
    if pvid:
        info["pvid"] = True
    extra = {"vlan_flags": "self"} if self_ else {}
    ipr.vlan_filter("add" if add else "del", index=index, vlan_info=info, **extra)


# ---- addresses and routes ------------------------------------------------------------------
@checked
def add_address(ipr: Any, index: int, cidr: str, exist_ok: bool = False) -> None:
    from pyroute2.netlink.exceptions import NetlinkError

    address, _, prefix = cidr.partition("/")
    try:
        ipr.addr("add", index=index, address=address, prefixlen=int(prefix))
    except NetlinkError as exc:
        if not (exist_ok and exc.code == 17):  # EEXIST
            raise


@checked
def del_address(ipr: Any, index: int, cidr: str) -> None:
    from pyroute2.netlink.exceptions import NetlinkError

    address, _, prefix = cidr.partition("/")
    try:
        ipr.addr("del", index=index, address=address, prefixlen=int(prefix))
    except NetlinkError as exc:
        if exc.code not in (99, 19):  # EADDRNOTAVAIL, ENODEV: already gone
            raise


@checked
def default_route(ipr: Any, index: int, gateway: str, add: bool) -> None:
    from pyroute2.netlink.exceptions import NetlinkError

    dst = "::/0" if ":" in gateway else "0.0.0.0/0"
    try:
        ipr.route("replace" if add else "del", dst=dst, gateway=gateway, oif=index)
    except NetlinkError as exc:
        if add or exc.code not in (3, 19):  # ESRCH, ENODEV: already gone
            raise


@checked
def dump_interfaces(ipr: Any) -> list[dict]:
    """Every interface of the handle's namespace with its addresses and counters."""
    import socket

    addresses: dict[int, dict[str, list[str]]] = {}
    for msg in ipr.addr("dump"):
        family = "ipv4" if msg["family"] == socket.AF_INET else "ipv6"
        cidr = f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}"
        addresses.setdefault(msg["index"], {"ipv4": [], "ipv6": []})[family].append(cidr)
    result = []
    for msg in ipr.link("dump"):
        stats = msg.get_attr("IFLA_STATS64") or {}
        found = addresses.get(msg["index"], {"ipv4": [], "ipv6": []})
        result.append(
            {
                "name": msg.get_attr("IFLA_IFNAME"),
                "mac": (msg.get_attr("IFLA_ADDRESS") or "").upper(),
                "mtu": msg.get_attr("IFLA_MTU"),
                "state": str(msg.get_attr("IFLA_OPERSTATE")).lower(),
                "ipv4": found["ipv4"],
                "ipv6": found["ipv6"],
                "rx_bytes": stats.get("rx_bytes", 0),
                "tx_bytes": stats.get("tx_bytes", 0),
                "rx_packets": stats.get("rx_packets", 0),
                "tx_packets": stats.get("tx_packets", 0),
            }
        )
    return result


# ---- traffic control -----------------------------------------------------------------------
@checked
def tbf(ipr: Any, index: int, rate: int, burst: int, latency_ms: int) -> None:
    """A token bucket as the root qdisc (replacing any): ``rate`` in bytes per second."""
    ipr.tc("replace", "tbf", index, handle=0x10000, rate=rate, burst=burst, latency=f"{latency_ms}ms")


@checked
def redirect_ingress(ipr: Any, index: int, target: int) -> None:
    """Everything arriving on ``index`` leaves through ``target`` (an ifb) instead, to be shaped there."""
    from pyroute2.protocols import ETH_P_ALL

    ipr.tc("add", "ingress", index, handle=0xFFFF0000)
    ipr.tc(
        "add-filter",
        "u32",
        index,
        parent=0xFFFF0000,
        prio=1,
        protocol=ETH_P_ALL,
        target=0x10001,
        keys=["0x0/0x0+0"],
        action={"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": target},
    )


@checked
def clear_qdiscs(ipr: Any, index: int) -> None:
    """Back to the defaults: no root qdisc of ours, no ingress qdisc (its filters go with it)."""
    from pyroute2.netlink.exceptions import NetlinkError

    for parent, handle in ((0xFFFFFFFF, 0x10000), (0xFFFFFFF1, 0xFFFF0000)):
        try:
            ipr.tc("del", index=index, parent=parent, handle=handle)
        except NetlinkError as exc:
            if exc.code not in (2, 22):  # ENOENT, EINVAL: there was none
                raise


@checked
def qdiscs(ipr: Any, index: int) -> list[dict]:
    """The qdiscs of one interface: kind, handle, parent and, for tbf, rate (bytes/s) and buffer."""
    result = []
    for msg in ipr.tc("dump", index=index):
        if msg["index"] != index:
            continue
        entry = {"kind": msg.get_attr("TCA_KIND"), "handle": msg["handle"], "parent": msg["parent"]}
        if entry["kind"] == "tbf":
            parms = msg.get_nested("TCA_OPTIONS", "TCA_TBF_PARMS") or {}
            entry["rate"] = parms.get("rate")
            entry["limit"] = parms.get("limit")
        result.append(entry)
    return result
