"""The tick's mirror of containers: only what changed is written and published.

Writing every container's row and sending a ``ct.status`` event for each on every tick cost an idle node
2 SQL statements, 7 row writes and 12 Redis commands per container and tick (docs/scaling.md). Here the
node's containers are read in one query, each compared field by field with what the node says, and the
ones that differ are written in one ``UPDATE`` and published in one batch; a container new to the
database, or one the node no longer has, goes through :func:`tasks.mirror.sync_container` as before.
Comparing with the rows themselves, not a digest kept in the agent, also repairs a row changed by
anyone else at the next tick.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

from django.db import transaction

from engine.errors import NotFound
from tasks.mirror import container_event, node_fields, sync_all, sync_backups, sync_container
from tasks.runtime import node_engine
from webui.live import publish_many
from webui.models import Container, Node

FULL_REFRESH_AFTER = 300.0  # seconds between two ticks that write and publish every container anyway
UNCOMPARED = {"memory_used"}  # the metrics write it every tick (tasks.node.write_sample); it moves all the time
STARTED_SLACK = timedelta(seconds=2)  # started_at is now - uptime: it wobbles by the time the reading took
_full_at: dict[str, float] = {}  # node -> when this process last mirrored all of its containers


def sync_tick(node: Node) -> list[int] | None:
    """The tick's mirror: the containers that changed (their IDs returned), or every container (None) at this
    process's first tick and once per :data:`FULL_REFRESH_AFTER`, in case something slipped past a comparison
    (the agent's start and the resync job mirror everything too, with :func:`tasks.mirror.sync_all`)."""
    last = _full_at.get(node.name)
    if last is None or time.monotonic() - last >= FULL_REFRESH_AFTER:
        _full_at[node.name] = time.monotonic()
        sync_all(node)
        return None
    changed = sync_changes(node, set(node_engine().ids()))
    sync_backups(node)  # the archives of its dump directories (listed again only when they changed)
    return changed


def same(key: str, old, new) -> bool:
    """Whether a row's value and the node's are the same (JSON values as the database gives them back)."""
    if key == "started_at":
        return (old is None) == (new is None) and (old is None or abs(old - new) <= STARTED_SLACK)
    if isinstance(new, (dict, list)):
        return old == json.loads(json.dumps(new, default=str))
    return old == new


def sync_changes(node: Node, on_node: set[int]) -> list[int]:
    """Mirror the node's containers whose fields changed; return their IDs (new and removed ones included)."""
    rows = {row.ctid: row for row in Container.objects.filter(node=node)}
    touched, changed, columns = [], [], set()
    for ctid in sorted(on_node):
        row = rows.get(ctid)
        try:
            fields = node_fields(ctid) if row is not None else None
        except NotFound:  # gone since the listing: the full path removes its row
            fields = None
        if fields is None:
            sync_container(node, ctid)
            touched.append(ctid)
            continue
        differ = [
            key for key, value in fields.items() if key not in UNCOMPARED and not same(key, getattr(row, key), value)
        ]
        if differ:
            for key, value in fields.items():
                setattr(row, key, value)
            row.node = node
            columns.update(fields)
            changed.append(row)
    for ctid, row in rows.items():
        if ctid not in on_node and row.status != Container.Status.CREATING:
            sync_container(node, ctid)  # deletes the row and says so
            touched.append(ctid)
    if changed:
        with transaction.atomic():
            Container.objects.bulk_update(changed, sorted(columns), batch_size=500)
        publish_many([([row.path, node.path], {"type": "ct.status", "ct": container_event(row)}) for row in changed])
    return sorted(touched + [row.ctid for row in changed])
