"""What a killed migration left, on either node, put right by the node's recovery (:mod:`engine.recovery`).

Source (``lock: migrate`` with the flock free and the intent the sender wrote):

- phase ``sending`` (killed before it asked the target to commit; the target then removes its copy by
  itself): the lock and intent are cleared, the container is started again if restart mode had stopped
  it.  The container is whole: nothing of it was changed.
- phase ``commit`` (killed while the commit was under way): which node holds the container cannot be
  known from here, so the lock is kept for a person, naming the target.

Target (``migrate/in-<ID>.json`` with the receiver's flock free): the half-received or uncommitted
container, its spool file, identity and marker are removed.
"""

from __future__ import annotations

import contextlib

from engine.errors import EngineError
from engine.migrate import incoming_lock, incoming_marker, remove_container, spool_dir
from engine.migrate.subvols import drop_current
from engine.state import Intent, container_busy, container_lock, flock_held


def release_outgoing(engine, ctid: int, facts: dict) -> tuple[str, str]:
    """(what, detail) for a source left in ``lock: migrate``."""
    from engine.config import write_config

    target = facts.get("to", "?")
    if facts.get("phase") != "sending":
        return (
            "kept",
            f"container {ctid}: a migration to {target} was interrupted while committing; lock 'migrate' kept: "
            f"if the container exists on the target node, remove it here; otherwise unlock it",
        )
    with container_lock(engine.layout, ctid):
        config = engine.config(ctid)
        drop_current(engine, config)  # what a sender of snapshots had taken of the current state
        config.current.values.pop("lock", None)
        write_config(engine.layout.config_path(ctid), config)
    Intent(engine.layout, ctid).clear()
    done = "lock cleared"
    if facts.get("running") and engine.node.running(ctid) is None:
        engine.start(ctid)
        done += "; started again, as it ran before the migration"
    return "released", f"container {ctid}: a migration to {target} was interrupted; it stays here ({done})"


def receiver_alive(engine, ctid: int) -> bool:
    return flock_held(incoming_lock(engine.layout, ctid))


def incoming(engine, ctid: int | None = None) -> list[tuple[int, str, str]]:
    """Markers of receivers that died: what they made removed.  (container ID, what, detail) each."""
    actions = []
    directory = spool_dir(engine.layout)
    markers = sorted(directory.glob("in-*.json")) if directory.is_dir() else []
    for marker in markers:
        head = marker.name[3:-5]
        if not head.isdigit() or (ctid is not None and int(head) != ctid):
            continue
        ident = int(head)
        if receiver_alive(engine, ident) or container_busy(engine.layout, ident):
            continue
        removed = False
        with container_lock(engine.layout, ident, timeout=0), contextlib.suppress(EngineError):
            if engine.exists(ident):
                remove_container(engine, ident)
                removed = True
        for path in directory.glob(f".in-{ident}-*"):
            path.unlink(missing_ok=True)
        (directory / f"in-{ident}.pem").unlink(missing_ok=True)
        marker.unlink(missing_ok=True)
        incoming_lock(engine.layout, ident).unlink(missing_ok=True)
        what = "its uncommitted copy and the received stream" if removed else "the received stream"
        actions.append(
            (ident, "removed", f"container {ident}: a migration into this node was interrupted; {what} removed")
        )
    return actions


def is_incoming(engine, ctid: int) -> bool:
    return incoming_marker(engine.layout, ctid).exists()
