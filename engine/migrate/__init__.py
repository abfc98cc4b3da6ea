"""Migration of a container to another node, as ``pct migrate``: the engine's side, with no web tier.

The source (:mod:`engine.migrate.send`) holds the container with ``lock:
migrate`` persisted, stops it first in restart mode, and streams its root
disk, volume mount points, config and firewall rules as one vzdump-format
archive (zstd) over mutual TLS (:mod:`engine.migrate.channel`) to a receiver
on the target node (:mod:`engine.migrate.receive`).  The receiver restores it
with the same ID as it arrives (``lock: create`` while it does, then ``lock:
migrate``), checks the stream's size and SHA-256 against the sender's
trailer, and only then answers "verified" (a mismatch removes what it made).  Only then does the source record that
it commits, ask the target to commit (the target's lock is cleared, the
container started in restart mode) and, once the target says done, remove
its own copy.

A failure or a kill on either side before the commit leaves the container
whole (and started again, in restart mode) on the source and nothing on the
target (:mod:`engine.migrate.recover`, run by the node's recovery).  The one
window in which neither side can know what the other did (a kill between
the commit request and its answer) leaves the lock on both for a person, and
the data on both.

Live migration (``online``) is refused: see :func:`engine.migrate.send.check_online`.
"""

from __future__ import annotations

MIGRATE_LOCK = "migrate"


def spool_dir(layout):
    """Where a receiver spools an incoming stream, and its markers live (under the state root)."""
    return layout.root / "migrate"


def incoming_marker(layout, ctid: int):
    return spool_dir(layout) / f"in-{ctid}.json"


def incoming_lock(layout, ctid: int):
    """The flock a receiver holds for its whole run (not the container's: a restore takes that itself)."""
    return layout.run / "lock" / f"migrate-in-{ctid}.lock"


def remove_container(engine, ctid: int) -> None:
    """The container's volumes, config and files removed, its lock notwithstanding: the caller holds its
    flock (a committed source, or a target's half-received copy)."""
    from engine.allocation import free_leftovers, owned_volumes
    from engine.network import container as network

    config = engine.config(ctid)
    for driver, vol in owned_volumes(engine.node, ctid, config).values():
        driver.delete(vol)
    engine.layout.config_path(ctid).unlink()
    free_leftovers(engine.node, ctid)
    for path in (
        engine.layout.console_log(ctid),
        engine.layout.run_record(ctid),
        network.firewall_file(engine.layout.root, ctid),
    ):
        path.unlink(missing_ok=True)
