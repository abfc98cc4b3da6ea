"""A node going offline or coming back, announced to the live pages once per transition.

Browsers only learn a node is gone from the absence of its ticks, so the tree's node icons kept their
colour until a reload. Every agent's tick looks at the other nodes' heartbeats: the first one to see a
heartbeat older than ``CAISSON_NODE_OFFLINE_AFTER`` publishes ``node.status`` (offline); Redis's
``SET NX`` on a key naming the node and that last heartbeat makes the announcement once per transition
whichever agents tick at the same time. The node itself announces its return from its heartbeat,
when the beat it replaces was older than the limit; its first mirror then sends its containers again.
"""

from __future__ import annotations

from django.core.cache import cache

from webui.live import publish_many
from webui.models import Container, Node
from webui.models.inventory import is_online, offline_cutoff

ANNOUNCED_FOR = 7 * 24 * 3600  # seconds a key is kept; a node silent for longer is not announced again


def status_event(node: Node, online: bool) -> dict:
    ctids = list(Container.objects.filter(node=node).order_by("ctid").values_list("ctid", flat=True))
    return {"type": "node.status", "node": node.name, "online": online, "ctids": ctids}


def announce_offline() -> list[str]:
    """Publish ``node.status`` for each node newly past the offline limit; return their names."""
    gone = []
    for node in Node.objects.filter(last_seen__lt=offline_cutoff()):
        if cache.add(f"caisson:node-offline:{node.name}:{node.last_seen.timestamp()}", 1, ANNOUNCED_FOR):
            gone.append(node)
    if gone:
        publish_many([([node.path], status_event(node, False)) for node in gone])
    return [node.name for node in gone]


def announce_return(node: Node, previous_seen) -> bool:
    """Called by the node's heartbeat with the beat it replaced: publish its return if it was offline."""
    if is_online(previous_seen):
        return False
    publish_many([([node.path], status_event(node, True))])
    return True
