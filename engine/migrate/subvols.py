"""Snapshots that travel: a container's btrfs subvolumes sent with ``btrfs send -p`` over the migration's channel.

A container with snapshots cannot go as one archive (an archive holds one tree).  Where its volumes and the
target storage are btrfs, each volume goes as a chain of ``btrfs send`` streams: its snapshots oldest first
(each one incremental on the one before, so shared data is sent once), then its current state (a read-only
snapshot ``…@.migrate`` taken while the container is held stopped) incremental on the newest.  The target
runs ``btrfs receive`` for each stream into the container's image directory, where a received subvolume
keeps its name (``subvol-<ID>-disk-N.subvol@<snap>``, a snapshot where the btrfs driver looks for it), then
makes the volume a writable snapshot of the received current state.  The config travels whole, snapshot
sections and their parent chain included, its volumes renamed to the target storage.

Each stream is framed, counted and hashed as the archive is; the receiver checks size and SHA-256 against
the sender's trailer and acknowledges it, so a bad stream stops the migration at once (and the receiver
removes everything it made: the btrfs driver's delete takes a volume's ``@`` siblings with it).

Overlay volumes travel alike, as layers (:mod:`engine.migrate.layers`), and plain directory volumes as one
tree per snapshot (:mod:`engine.migrate.trees`); a container's volumes must all be of one of these kinds.
Where the target storage is of another kind, the receiver refuses, naming the
snapshots and the storage (as Proxmox does); ``drop_snapshots`` sends the current state alone, as an
archive, and the snapshots are left behind (removed with the source after the commit).  Snapshots on a
storage of another kind on the source (a raw image's) are refused there for the same reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from engine import faults
from engine.config import ContainerConfig, write_config
from engine.errors import HostError, NotSupported, ValidationError
from engine.migrate.channel import CHUNK, ChunkWriter, Stream, verify_trailer
from engine.snapconfig import storage_volumes
from engine.storage.btrfs import subvolume_delete, subvolume_snapshot

CURRENT = ".migrate"  # the suffix of the read-only snapshot of a volume's current state, sent last


def ordered(config: ContainerConfig) -> list[str]:
    """The snapshots oldest first (by their time, then their parent chain's order, then name)."""
    depth: dict[str, int] = {}

    def level(name: str, seen=()) -> int:
        if name not in depth:
            parent = config.snapshots[name].values.get("parent")
            ok = parent in config.snapshots and parent not in seen
            depth[name] = level(parent, (*seen, name)) + 1 if ok else 0
        return depth[name]

    def when(name: str) -> int:
        try:
            return int(config.snapshots[name].values.get("snaptime", 0))
        except ValueError:
            return 0

    return sorted(config.snapshots, key=lambda name: (when(name), level(name), name))


KINDS = ("btrfs", "overlay", "dir")  # the drivers whose snapshots can travel (streams, layers, trees)


def volumes(engine, config: ContainerConfig) -> tuple[str, dict[str, tuple[object, str, list[str]]]]:
    """(kind, ``{volume ID: (driver, vol, its snapshots oldest first)}``) for the current section and every
    snapshot; refused (naming the snapshots and the storage) if one is not of a kind that can travel, or of
    another kind than the rest."""
    found: dict[str, tuple[object, str, list[str]]] = {}
    order = ordered(config)
    sections = [config.current, *config.snapshots.values()]
    unused = sorted({key for section in sections for key in section.values if key.startswith("unused")})
    if unused:
        raise NotSupported(
            f"container {config.ctid} has snapshots ({', '.join(order)}) and unused volumes ({', '.join(unused)}): "
            "those cannot travel with them; delete the unused volumes first, or migrate with drop-snapshots"
        )
    kinds = set()
    for section in [config.current, *(config.snapshots[name] for name in order)]:
        for key, volid in storage_volumes(section):
            if volid in found:
                continue
            storage, driver, vol = engine.storages.resolve(volid, config.ctid, key=key)
            kinds.add(driver.info.name)
            if driver.info.name not in KINDS or len(kinds) > 1:
                raise NotSupported(
                    f"container {config.ctid} has snapshots ({', '.join(order)}) and {key} is on storage "
                    f"'{storage.id}' ({driver.info.name}): only snapshots of volumes all on btrfs, all on "
                    "overlay or all on plain directory storages can travel; delete them first or migrate "
                    "with drop-snapshots (they are then left behind)"
                )
            snaps = [name for name in order if driver.has_snapshot(vol, name)]
            for name in snaps:
                clones = driver.linked_clones(vol, name)
                if clones:
                    raise NotSupported(
                        f"container {config.ctid}'s snapshot '{name}' is the base of linked clone(s) "
                        f"{', '.join(map(str, clones))}: it cannot leave this node while they stand on it"
                    )
            found[volid] = (driver, vol, snaps)
    return kinds.pop() if kinds else "btrfs", found


def without_snapshots(config: ContainerConfig) -> ContainerConfig:
    """A copy of ``config`` with no snapshot sections (what travels when they are dropped)."""
    copy = ContainerConfig.parse(config.ctid, config.render())
    copy.snapshots.clear()
    copy.current.values.pop("parent", None)
    return copy


def take_current(found: dict) -> list[Path]:
    """A read-only snapshot of each volume's current state (the container is held stopped); returns them."""
    made = []
    try:
        for driver, vol, _ in found.values():
            path = driver.path(vol).with_name(f"{driver.path(vol).name}@{CURRENT}")
            subvolume_delete(path)
            subvolume_snapshot(driver.path(vol), path, readonly=True)
            made.append(path)
    except BaseException:
        drop(made)
        raise
    return made


def drop(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(HostError):
            subvolume_delete(path)


def drop_current(engine, config: ContainerConfig) -> None:
    """Remove the ``@.migrate`` snapshots a killed sender left beside the container's btrfs volumes."""
    for key, volid in storage_volumes(config.current):
        with contextlib.suppress(Exception):
            _, driver, vol = engine.storages.resolve(volid, config.ctid, key=key)
            if driver.info.name == "btrfs":
                drop([driver.path(vol).with_name(f"{driver.path(vol).name}@{CURRENT}")])


def send_all(stream: Stream, found: dict, report: Callable[[int], None]) -> int:
    """Every volume's chain of streams, each acknowledged by the receiver; returns the bytes sent."""
    total = 0
    for volid, (driver, vol, snaps) in found.items():
        base = driver.path(vol)
        parent = None
        for name in [*snaps, CURRENT]:
            path = base.with_name(f"{base.name}@{name}")
            stream.send_line({"volume": volid, "snapshot": name, "leaf": base.name})
            total += _send_one(stream, path, parent, lambda n, t=total: report(t + n))
            stream.read_line()  # the receiver's acknowledgement: received, verified
            parent = path
    stream.send_line({"volume": None})
    return total


def _send_one(stream: Stream, path: Path, parent: Path | None, report: Callable[[int], None]) -> int:
    argv = ["btrfs", "send", "-q", *(["-p", str(parent)] if parent else []), str(path)]
    return send_command(stream, argv, f"btrfs send {path.name}", report)


def send_command(stream: Stream, argv: list[str], what: str, report: Callable[[int], None]) -> int:
    """``argv``'s output as one framed stream with its trailer (size, SHA-256); returns its size."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sink = ChunkWriter(stream)
    try:
        fd, sent = proc.stdout.fileno(), 0
        while data := os.read(fd, CHUNK):
            sink.write(data)
            sent += len(data)
            report(sent)
        sink.close()
    except BaseException:
        sink.abandon()
        proc.kill()
        proc.wait()
        raise
    _finished(proc, what)
    stream.send_chunk(b"")
    stream.send_line({"bytes": sink.bytes, "sha256": sink.digest.hexdigest()})
    return sink.bytes


# ---- the target's side ------------------------------------------------------------------------------
def check_target(engine, ctid: int, config: ContainerConfig, storage: str, kind: str) -> object:
    """The target storage's driver, if it can keep the snapshots (one of ``kind``); else refused naming them
    and it."""
    if kind not in KINDS:
        raise ValidationError(f"migration: the sender's volumes are of an unknown kind '{kind}'")
    driver = engine.storages.get(storage, content="rootdir", key="storage").plain
    if driver.info.name != kind:
        raise NotSupported(
            f"container {ctid} has snapshots ({', '.join(ordered(config))}): the target storage '{storage}' "
            f"({driver.info.name}) cannot keep them; migrate to a storage of the source's kind ({kind}), "
            "or with drop-snapshots to leave them behind"
        )
    return driver


def renamed(config: ContainerConfig, storage: str) -> ContainerConfig:
    """``config`` with every volume ID of every section on ``storage`` (same volume names)."""
    for section in [config.current, *config.snapshots.values()]:
        for key, volid in storage_volumes(section):
            value = section.values[key]
            section.values[key] = f"{storage}:{volid.partition(':')[2]}{value[value.index(volid) + len(volid) :]}"
    return config


def receive_all(engine, stream: Stream, driver, ctid: int, owner: int, say) -> int:
    """The sender's chains received into the image directory, each verified; returns the bytes received.
    The caller has written the config, so a failure's cleanup (the container removed) takes what came."""
    directory = driver.owner_dir(ctid, owner)
    received, leaves = 0, set()
    while (head := stream.read_line()).get("volume") is not None:
        leaf, name = str(head.get("leaf", "")), str(head.get("snapshot", ""))
        if leaf != Path(leaf).name or not leaf.startswith(f"subvol-{ctid}-disk-") or "@" in leaf:
            raise ValidationError(f"migration: the sender names an unexpected volume '{leaf}'")
        count, digest = _receive_one(stream, directory, received)
        verify_trailer(stream.read_line(), count, digest)
        if not (directory / f"{leaf}@{name}").is_dir():
            raise HostError(f"migration: btrfs receive did not make {leaf}@{name}")
        received += count
        leaves.add(leaf)
        stream.send_line({"ok": True})
    for leaf in leaves:  # the volume: a writable snapshot of the received current state
        subvolume_snapshot(directory / f"{leaf}@{CURRENT}", directory / leaf, readonly=False)
        subvolume_delete(directory / f"{leaf}@{CURRENT}")
    say(f"received {received} bytes of btrfs streams, each verified (size and SHA-256)")
    return received


def _receive_one(stream: Stream, directory: Path, before: int) -> tuple[int, str]:
    return receive_command(stream, ["btrfs", "receive", "-q", str(directory)], "btrfs receive", before)


def receive_command(stream: Stream, argv: list[str], what: str, before: int) -> tuple[int, str]:
    """One framed stream into ``argv``'s input; (size, SHA-256) of what came (the caller checks the trailer)."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    digest, count, half = hashlib.sha256(), 0, False
    try:
        while data := stream.read_chunk():
            digest.update(data)
            proc.stdin.write(data)
            count += len(data)
            if not half and before + count >= 4 << 20:
                half = True
                faults.point("migrate:receiving")
        proc.stdin.close()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    _finished(proc, what)
    return count, digest.hexdigest()


def _finished(proc: subprocess.Popen, what: str) -> None:
    """A tool's exit checked, its own words in the error."""
    err = proc.stderr.read().decode(errors="replace").strip()
    if proc.wait() != 0:
        raise HostError(f"{what} failed: {err or 'exit status ' + str(proc.returncode)}")


def write_received_config(engine, ctid: int, config: ContainerConfig, lock: str) -> None:
    config.current.values["lock"] = lock
    write_config(engine.layout.config_path(ctid), config)
