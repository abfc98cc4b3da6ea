"""Addresses on a bridge: hand out free ones from its pool, refuse ones another container holds.

The truth is the containers' configs: an address is taken when some other
container's config puts it on the same bridge.  Allocation and the config
write that records it must happen under ``node_lock``, or two creates at
once could draw the same address.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from engine.errors import ValidationError
from engine.network.bridges import Bridge
from engine.network.nics import Nic, generate_mac

Others = Mapping[int, Iterable[Nic]]  # container ID -> its interfaces


@contextmanager
def node_lock(root: Path | str) -> Iterator[None]:
    """One node-wide lock for address allocation (a flock, released if the holder dies)."""
    path = Path(root) / "network"
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / ".pool.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def claims(bridge: str, others: Others, exclude: int | None = None) -> dict[object, tuple[int, str]]:
    """Addresses and MACs other containers hold on ``bridge``: value -> (container ID, netN)."""
    held: dict[object, tuple[int, str]] = {}
    for ctid, nics in others.items():
        if ctid == exclude:
            continue
        for nic in nics:
            if nic.bridge != bridge:
                continue
            for address in (nic.ipv4, nic.ipv6):
                if address is not None:
                    held[address.ip] = (ctid, nic.key)
            held[(nic.hwaddr or generate_mac(ctid, nic.index)).upper()] = (ctid, nic.key)
    return held


def allocate(bridge: Bridge, taken: Iterable[object]) -> ipaddress.IPv4Interface:
    """The first free pool address, with the bridge's prefix length."""
    if not bridge.pool or bridge.address is None:
        raise ValidationError(f"bridge '{bridge.name}' has no address pool (caisson-pool) to draw from")
    busy = set(taken)
    net = bridge.address.network
    for address in bridge.pool_addresses():
        if address in busy or address == bridge.address.ip or address in (net.network_address, net.broadcast_address):
            continue
        return ipaddress.IPv4Interface(f"{address}/{net.prefixlen}")
    first, last = bridge.pool
    raise ValidationError(f"bridge '{bridge.name}': every address of the pool {first}-{last} is taken")


def check_collisions(ctid: int, nics: list[Nic], others: Others, bridges: Mapping[str, Bridge]) -> None:
    """Refuse an address or MAC another container (or another of this one's interfaces) has on the bridge."""
    mine: dict[str, dict[object, str]] = {}
    cache: dict[str, dict[object, tuple[int, str]]] = {}
    for nic in nics:
        if nic.bridge is None:
            continue
        held = cache.setdefault(nic.bridge, claims(nic.bridge, others, exclude=ctid))
        own = mine.setdefault(nic.bridge, {})
        bridge = bridges.get(nic.bridge)
        values: list[tuple[object, str]] = [(a.ip, "address") for a in (nic.ipv4, nic.ipv6) if a is not None]
        values.append(((nic.hwaddr or generate_mac(ctid, nic.index)).upper(), "MAC"))
        for value, what in values:
            if bridge is not None and value in (
                getattr(bridge.address, "ip", None),
                getattr(bridge.address6, "ip", None),
            ):
                raise ValidationError(
                    f"{nic.key}: {what} {value} is the bridge '{nic.bridge}''s own address", key=nic.key
                )
            if value in held:
                other, key = held[value]
                raise ValidationError(
                    f"{nic.key}: {what} {value} on bridge '{nic.bridge}' is already used by container {other} ({key})",
                    key=nic.key,
                )
            if value in own:
                raise ValidationError(
                    f"{nic.key}: {what} {value} on bridge '{nic.bridge}' is already used by "
                    f"{own[value]} of this container",
                    key=nic.key,
                )
            own[value] = nic.key
