"""Isolated id maps (LXD's ``security.idmap.isolated``): a 65536-id range of its own per container.

A container created with one gets ``lxc.idmap: u 0 <base> 65536`` and ``g ...`` in its config, in
Proxmox's syntax, so its root is no other container's root.  Ranges come from root's entries in
/etc/subuid and /etc/subgid (the node's subordinate range, as LXC reads it) or, where root has none
beyond the default map, from LXD's convention: 1,000,000 ids upwards, a billion of them.  A range
never overlaps the default map, another container's map, nor another user's subordinate range;
allocation happens under a node-wide lock held until the new config is written.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from engine.errors import ValidationError
from engine.idmap import MIN_HOST_BASE, IdMap

SIZE = 65536
DEFAULT_POOL = (1_000_000, 1_000_000_000)


def _subordinate(path: str) -> list[tuple[str, int, int]]:
    entries = []
    try:
        with open(path) as handle:
            for line in handle:
                fields = line.strip().split(":")
                if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
                    entries.append((fields[0], int(fields[1]), int(fields[2])))
    except FileNotFoundError:
        pass
    return entries


def pools(path: str, default: IdMap) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Root's ranges big enough for more than the default map, and every other user's (to avoid)."""
    mine, others = [], []
    for user, start, count in _subordinate(path):
        (mine if user in ("root", "0") else others).append((start, count))
    mine = [(s, c) for s, c in mine if c >= SIZE and (s, c) != (default.uid_base, default.count)]
    return mine or [DEFAULT_POOL], others


def _overlaps(base: int, ranges: Iterable[tuple[int, int]]) -> bool:
    return any(base < start + count and start < base + SIZE for start, count in ranges)


def allocate(
    taken: Iterable[tuple[int, int]],
    subuid: str = "/etc/subuid",
    subgid: str = "/etc/subgid",
    default: IdMap | None = None,
) -> IdMap:
    """The lowest free 65536-aligned range, the same for uids and gids."""
    default = default or IdMap()
    uid_pools, uid_others = pools(subuid, default)
    gid_pools, gid_others = pools(subgid, default)
    avoid = (
        list(taken)
        + uid_others
        + gid_others
        + [(default.uid_base, default.count), (default.gid_base, default.count), (0, MIN_HOST_BASE)]
    )
    for start, count in uid_pools:
        base = -(-start // SIZE) * SIZE
        while base + SIZE <= start + count:
            in_gids = any(s <= base and base + SIZE <= s + c for s, c in gid_pools)
            if in_gids and not _overlaps(base, avoid):
                return IdMap(base, base, SIZE)
            base += SIZE
    raise ValidationError(
        "no free id range of 65536 is left in the node's subordinate ids (/etc/subuid)", key="isolated_idmap"
    )


def ranges_of(idmap: IdMap) -> list[tuple[int, int]]:
    return [(idmap.uid_base, idmap.count), (idmap.gid_base, idmap.count)]


@contextlib.contextmanager
def node_lock(run_dir: Path) -> Iterator[None]:
    """Serialises allocations on a node: held from the choice of a range until the config names it."""
    path = run_dir / "lock" / "idranges.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
