"""Newer versions of a node's stored templates, from the node's mirrored catalog (``engine.templates.updates``):
the templates page and the pages of containers made from an out-of-date template offer the re-download or
rebuild, as a job of the templates page's own kinds (``download``, ``tmplbuild``)."""

from __future__ import annotations

from engine.templates.updates import Update, successor, updates
from webui.models import CatalogEntry, Node, StoredTemplate


def for_node(node: Node) -> dict[str, Update]:
    stored = list(StoredTemplate.objects.filter(node=node).values_list("name", flat=True))
    if not stored:
        return {}
    catalog = list(CatalogEntry.objects.filter(node=node).values_list("name", "version", "buildable"))
    return updates(stored, catalog)


def stored_successor(container) -> str | None:
    """A newer template stored on the container's node than the one it was made from (a rebuild's target)."""
    if not container.source_template:
        return None
    stored = list(StoredTemplate.objects.filter(node=container.node).values_list("name", flat=True))
    return successor(stored, container.source_template)


def for_container(container) -> Update | None:
    """The update of the template ``container`` was made from, if it is still stored and has one."""
    if not container.source_template:
        return None
    return for_node(container.node).get(container.source_template)
