"""Snapshots that travel between plain directory storages: one tar stream per snapshot, then the volume.

A ``dir`` storage keeps a snapshot as a full copy of the tree beside the volume
(``subvol-<ID>-disk-N.subvol@<name>``, :mod:`engine.storage.dir`), so each one goes whole, oldest first,
then the volume itself: a stream per snapshot, as the copies are.  Each is received into a staging
directory named like a snapshot (``…subvol@.in-<name>``, so a failure's removal of the volume takes it
too) and renamed into place once its size and SHA-256 check out.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from engine.errors import ValidationError
from engine.migrate.channel import Stream, verify_trailer
from engine.migrate.layers import TAR
from engine.migrate.subvols import receive_command, send_command
from engine.storage.base import check_snapshot_name


def send_all(stream: Stream, found: dict, report: Callable[[int], None]) -> int:
    """Every volume's snapshots oldest first, then the volume (the container is held stopped)."""
    total = 0
    for volid, (driver, vol, snaps) in found.items():
        path = driver.path(vol)
        for name in [*snaps, None]:
            tree = driver.snapshot_path(vol, name) if name else path
            stream.send_line({"volume": volid, "leaf": path.name, "snapshot": name})
            argv = [*TAR, "-C", str(tree), "-cf", "-", "."]
            total += send_command(stream, argv, f"tar of {tree}", lambda n, t=total: report(t + n))
            stream.read_line()  # received and verified
    stream.send_line({"volume": None})
    return total


def receive_all(engine, stream: Stream, driver, ctid: int, owner: int, say) -> int:
    """The trees received into the image directory, each verified before it is renamed into place."""
    directory = driver.owner_dir(ctid, owner)
    received = 0
    while (head := stream.read_line()).get("volume") is not None:
        leaf, name = str(head.get("leaf", "")), head.get("snapshot")
        if "/" in leaf or "@" in leaf or not leaf.startswith(f"subvol-{ctid}-disk-") or not driver.owns(leaf):
            raise ValidationError(f"migration: the sender names an unexpected volume '{leaf}'")
        final = directory / (f"{leaf}@{check_snapshot_name(str(name))}" if name is not None else leaf)
        staging = directory / f"{leaf}@.in-{name or ''}"
        staging.mkdir(mode=0o755)
        count, digest = receive_command(stream, [*TAR, "-C", str(staging), "-xpf", "-"], "tar", received)
        verify_trailer(stream.read_line(), count, digest)
        received += count
        os.rename(staging, final)
        stream.send_line({"ok": True})
    say(f"received {received} bytes of directory trees, each verified (size and SHA-256)")
    return received
