"""The few rtnetlink requests a container start makes, encoded by hand on a plain socket.

A start needs four kinds of request: create a veth pair whose peer is born
inside the container's namespace (up, named, with its MAC), delete a link,
add an address, set a default route.  pyroute2 takes about a millisecond of
Python per request and 130 ms to import; these encoders take microseconds,
send every request of a step in one datagram and read the kernel's acks.
Nothing here imports pyroute2, so a start with plain interfaces never loads it
(VLANs and rate limits still go through ``engine.network.netlink``).

Safe to call in a forked child before exec: only ``socket`` and ``struct``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

NETLINK_ROUTE = 0
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 17, 20, 24
IFF_UP = 0x1
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 4, 10, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_OIF, RTA_GATEWAY = 4, 5
RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 4, 0, 1
NLA_F_NESTED = 0x8000

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags


@dataclass(frozen=True)
class Request:
    """One message: type, flags, body; ``what`` names it in an error."""

    type: int
    flags: int
    body: bytes
    what: str


def attr(kind: int, payload: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def _name(name: str) -> bytes:
    return name.encode() + b"\0"


def _mac(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def _u32(value: int) -> bytes:
    return struct.pack("=I", value)


def _ifinfo(index: int = 0, up: bool | None = None) -> bytes:
    flags = IFF_UP if up else 0
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, IFF_UP if up is not None else 0)


# ---- requests ------------------------------------------------------------------------------
def new_veth(
    host: str, host_mac: str, peer: str, peer_mac: str, mtu: int, ns_fd: int, master: int | None, host_up: bool
) -> Request:
    """``ip link add <host> address .. mtu .. [master ..] [up] type veth peer <peer> address .. netns <fd>``.

    The peer comes down: the kernel refuses (ENOTCONN) to bring it up while the pair is being made, so it
    is brought up from inside, with its addresses (``set_up``).
    """
    peer_msg = (
        _ifinfo()
        + attr(IFLA_IFNAME, _name(peer))
        + attr(IFLA_ADDRESS, _mac(peer_mac))
        + attr(IFLA_MTU, _u32(mtu))
        + attr(IFLA_NET_NS_FD, _u32(ns_fd))
    )
    info = nested(
        IFLA_LINKINFO, attr(IFLA_INFO_KIND, b"veth"), nested(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_msg))
    )  # an ifinfomsg first: not flagged nested
    body = (
        _ifinfo(up=host_up)
        + attr(IFLA_IFNAME, _name(host))
        + attr(IFLA_ADDRESS, _mac(host_mac))
        + attr(IFLA_MTU, _u32(mtu))
        + (attr(IFLA_MASTER, _u32(master)) if master else b"")
        + info
    )
    return Request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"creating veth '{host}'")


def set_up(index: int) -> Request:
    return Request(RTM_NEWLINK, 0, _ifinfo(index, up=True), "bringing the link up")


def del_link(name: str) -> Request:
    return Request(RTM_DELLINK, 0, _ifinfo() + attr(IFLA_IFNAME, _name(name)), f"deleting '{name}'")


def new_address(index: int, cidr: str) -> Request:
    """``ip addr add <cidr> dev <index>`` (EEXIST is an error: the caller decides)."""
    iface = ipaddress.ip_interface(cidr)
    family = socket.AF_INET if iface.version == 4 else socket.AF_INET6
    packed = iface.ip.packed
    attrs = attr(IFA_ADDRESS, packed) + (attr(IFA_LOCAL, packed) if iface.version == 4 else b"")
    body = _IFADDR.pack(family, iface.network.prefixlen, 0, RT_SCOPE_UNIVERSE, index) + attrs
    return Request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, f"adding address {cidr}")


def default_route(index: int, gateway: str, onlink: bool = False) -> Request:
    """``ip route replace default via <gateway> dev <index> [onlink]`` (onlink: a gateway outside the
    interface's subnets, reached directly on the link)."""
    gw = ipaddress.ip_address(gateway)
    family = socket.AF_INET if gw.version == 4 else socket.AF_INET6
    flags = RTNH_F_ONLINK if onlink else 0
    body = (
        _RTMSG.pack(family, 0, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST, flags)
        + attr(RTA_GATEWAY, gw.packed)
        + attr(RTA_OIF, _u32(index))
    )
    return Request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, body, f"default route via {gateway}")


RTNH_F_ONLINK = 4  # rtm_flags: the gateway is on the link, whatever the subnets say


# ---- the socket ----------------------------------------------------------------------------
class RtnlError(OSError):
    """A request the kernel refused: errno, and which request."""

    def __init__(self, errno: int, what: str):
        super().__init__(errno, os.strerror(errno))
        self.what = what


def open_socket() -> socket.socket:
    """A route netlink socket in the caller's network namespace."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    sock.bind((0, 0))
    return sock


def call(sock: socket.socket, requests: list[Request], ignore: dict[int, tuple[int, ...]] | None = None) -> None:
    """Send every request in one datagram and wait for each ack; raise the first refusal in request order.

    The kernel handles the messages of a datagram one after the other, so a later request may rely on an
    earlier one (a route on the prefix an address just made).  ``ignore``: per request index, errnos
    that count as done (EEXIST for an address that is already there).
    """
    if not requests:
        return
    base = int.from_bytes(os.urandom(3), "little") << 4
    data = b"".join(
        _HEADER.pack(_HEADER.size + len(r.body), r.type, NLM_F_REQUEST | NLM_F_ACK | r.flags, base + i, 0) + r.body
        for i, r in enumerate(requests)
    )
    sock.sendto(data, (0, 0))  # to the kernel
    errors: dict[int, int] = {}
    pending = set(range(len(requests)))
    while pending:
        reply = sock.recv(65536)
        offset = 0
        while offset + _HEADER.size <= len(reply):
            length, kind, _, seq, _ = _HEADER.unpack_from(reply, offset)
            if length < _HEADER.size:
                break
            index = seq - base
            if kind == NLMSG_ERROR and index in pending:
                code = -struct.unpack_from("=i", reply, offset + _HEADER.size)[0]
                pending.discard(index)
                if code and code not in (ignore or {}).get(index, ()):
                    errors[index] = code
            offset += (length + 3) & ~3
    if errors:
        first = min(errors)
        raise RtnlError(errors[first], requests[first].what)


def request(*requests: Request) -> None:
    """The requests on a fresh socket in the caller's namespace."""
    with open_socket() as sock:
        call(sock, list(requests))
