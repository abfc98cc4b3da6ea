"""Snapshots that travel between overlay storages: each layer once, as a tar stream, then the upper layer.

An overlay volume is a stack of layers under ``<storage>/layers/`` (a template's, shared; one per
snapshot) and an upper layer of its own; a snapshot is a record listing its layers
(:mod:`engine.storage.overlay`).  The sender announces a volume with its layer list and its snapshots'
records; the receiver writes the volume and the records first (so the storage's layer sweep keeps what is
about to arrive), answers with the layers it lacks (a template layer made from the same template and id
map is there already), and receives each of them, then the upper layer, as a ``tar`` stream (numeric ids,
extended attributes with overlayfs's own, device nodes: the whiteouts) into a staging directory inside the
volume, renamed into place once its size and SHA-256 check out.  A failure removes the volume, and the
sweep then the layers only it used.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from engine.errors import ValidationError
from engine.migrate.channel import Stream, verify_trailer
from engine.migrate.subvols import receive_command, send_command
from engine.storage.base import check_snapshot_name, remove_path

TAR = ["tar", "--xattrs", "--xattrs-include=*", "--acls", "--numeric-owner"]


def _needed(lower: list[str], records: dict[str, list[str]]) -> list[str]:
    seen: dict[str, None] = {}
    for layer in [*lower, *(layer for layers in records.values() for layer in layers)]:
        seen.setdefault(layer)
    return [layer for layer in seen if layer != "empty"]


def send_all(stream: Stream, found: dict, report: Callable[[int], None]) -> int:
    """Every volume's missing layers and its upper layer (the container is held stopped); returns bytes sent."""
    total = 0
    for volid, (driver, vol, snaps) in found.items():
        path = driver.path(vol)
        lower = driver._read_layers(path / "lower")
        records = {name: driver._read_layers(driver.snapshot_path(vol, name)) for name in snaps}
        stream.send_line({"volume": volid, "leaf": path.name, "lower": lower, "snapshots": records})
        needed = _needed(lower, records)
        wanted = stream.read_line().get("want")
        if not isinstance(wanted, list) or not set(wanted) <= set(needed):
            raise ValidationError("migration: the receiver asked for layers the volume does not have")
        for layer, tree in [*((w, driver.layers / w) for w in wanted), (None, path / "upper")]:
            stream.send_line({"layer": layer})
            argv = [*TAR, "-C", str(tree), "-cf", "-", "."]
            total += send_command(stream, argv, f"tar of {tree}", lambda n, t=total: report(t + n))
            stream.read_line()  # received and verified
    stream.send_line({"volume": None})
    return total


def _layers(value, what: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise ValidationError(f"migration: {what}: expected a list of layers")
    for layer in value:
        if not isinstance(layer, str) or not layer.replace("-", "").isalnum():
            raise ValidationError(f"migration: {what}: bad layer name {layer!r}")
    return value


def receive_all(engine, stream: Stream, driver, ctid: int, owner: int, say) -> int:
    """The sender's volumes made here (records first), their layers and upper layers received and verified."""
    driver.owner_dir(ctid, owner)
    with driver._locked():
        driver._empty_layer()
    received = 0
    while (head := stream.read_line()).get("volume") is not None:
        leaf = str(head.get("leaf", ""))
        if "/" in leaf or "@" in leaf or not leaf.startswith(f"subvol-{ctid}-disk-") or not driver.owns(leaf):
            raise ValidationError(f"migration: the sender names an unexpected volume '{leaf}'")
        vol = f"{ctid}/{leaf}"
        lower = _layers(head.get("lower"), leaf)
        snapshots = head.get("snapshots") or {}
        records = {
            check_snapshot_name(str(name)): _layers(layers, f"{leaf}@{name}") for name, layers in snapshots.items()
        }
        with driver._locked():  # the records first: the layer sweep keeps what they name
            driver._make_volume(vol, owner, lower, None)
            for name, layers in records.items():
                driver._write_layers(driver.snapshot_path(vol, name), layers)
            wanted = [layer for layer in _needed(lower, records) if not (driver.layers / layer).is_dir()]
        stream.send_line({"want": wanted})
        path = driver.path(vol)
        for layer in [*wanted, None]:
            if stream.read_line().get("layer") != layer:
                raise ValidationError(f"migration: the sender's layers of {leaf} came out of order")
            staging = path / f".in-{layer or 'upper'}"
            staging.mkdir(mode=0o755)
            count, digest = receive_command(stream, [*TAR, "-C", str(staging), "-xpf", "-"], "tar", received)
            verify_trailer(stream.read_line(), count, digest)
            received += count
            if layer is None:
                remove_path(path / "upper")
                os.rename(staging, path / "upper")
            else:
                os.rename(staging, driver.layers / layer)
            stream.send_line({"ok": True})
    say(f"received {received} bytes of overlay layers, each verified (size and SHA-256)")
    return received
