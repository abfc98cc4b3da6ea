"""What an agent process of a node is: its engine and its row in the database.

Every job and mirror function of ``tasks`` asks here, and this module asks
nothing of them: the bottom of the package, so no import runs back up.
"""

from __future__ import annotations

from functools import cache

from django.conf import settings

from webui.models import Node


@cache
def node_engine():
    """This process's engine; it reaps the inits of containers it started (see Engine's ``reaper``)."""
    from engine.lifecycle import Engine

    return Engine(reaper=True)


def this_node() -> Node:
    node, _ = Node.objects.get_or_create(name=settings.CAISSON_NODE)
    return node
