"""Rate limits of a container's interface, as Proxmox's ``rate`` (MB/s) means them: both directions.

The host end of the veth sends what the container receives, so a token
bucket (tbf) as its root qdisc shapes the container's ingress.  What the
container sends arrives on the host end; the kernel shapes only what leaves
an interface, so that traffic is redirected (tc mirred) to an ifb device of
its own, ``ifb<ID>i<N>``, whose root tbf shapes it.  Unlike a policer this
needs no ``act_police`` (absent from some kernels) and queues instead of
dropping, which TCP likes better.  Everything lives on the host side: the
container's root cannot lift its own limit.
"""

from __future__ import annotations

from typing import Any

from engine.network import netlink

MB = 1024 * 1024  # Proxmox's "MB/s" are MiB/s: PVE multiplies by 1024 * 1024
LATENCY_MS = 50
MIN_BURST = 32 * 1024  # a few full-size frames, or the bucket starves on every GSO burst


def ifb_name(ctid: int, index: int) -> str:
    return f"ifb{ctid}i{index}"


def bucket(rate_mb: float) -> tuple[int, int]:
    """(rate in bytes/s, burst in bytes): a tenth of a second's worth, at least MIN_BURST."""
    rate = max(1, int(rate_mb * MB))
    return rate, max(MIN_BURST, rate // 10)


def apply(ipr: Any, ctid: int, index: int, veth_index: int, rate_mb: float | None, fresh: bool = False) -> None:
    """Set (or with None, remove) the limit of one interface; running again replaces the old limit.

    ``fresh``: the veth was just made, so there is nothing to clear first.
    """
    if not fresh:
        clear(ipr, ctid, index, veth_index)
    if not rate_mb:
        return
    rate, burst = bucket(rate_mb)
    netlink.tbf(ipr, veth_index, rate, burst, LATENCY_MS)
    ifb = netlink.create_ifb(ipr, ifb_name(ctid, index))
    netlink.tbf(ipr, ifb, rate, burst, LATENCY_MS)
    netlink.redirect_ingress(ipr, veth_index, ifb)


def clear(ipr: Any, ctid: int, index: int, veth_index: int | None) -> None:
    """No limit: default qdiscs on the veth, no ifb."""
    if veth_index is not None:
        netlink.clear_qdiscs(ipr, veth_index)
    netlink.delete_link(ipr, ifb_name(ctid, index))


def limits(ipr: Any, ctid: int, index: int, veth_index: int) -> dict[str, int | None]:
    """What is in force, read back from the kernel: bytes/s towards and from the container."""
    towards = next((q["rate"] for q in netlink.qdiscs(ipr, veth_index) if q["kind"] == "tbf"), None)
    ifb = netlink.link(ipr, ifb_name(ctid, index))
    shaped = next((q["rate"] for q in netlink.qdiscs(ipr, ifb["index"]) if q["kind"] == "tbf"), None) if ifb else None
    redirected = any(q["kind"] == "ingress" for q in netlink.qdiscs(ipr, veth_index))
    return {"ingress": towards, "egress": shaped if redirected else None}
