"""The mirror of a node's template sources: the list, how each last update went, the news of their indexes.

Called by the template mirror (``sync_templates``) inside its transaction, after every template job.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from engine.errors import EngineError
from webui.models import Node, TemplateSource

log = logging.getLogger(__name__)


def sync_template_sources(node: Node, store) -> None:
    """Mirror the node's template sources, how each last update went, and the news of their indexes."""
    try:
        sources, news = store.sources(), {n.source_id: n for n in store.news()}
    except EngineError as exc:
        log.warning("template sources of %s unreadable: %s", node, exc)
        return
    status = store.status()

    def when(seconds):
        return datetime.fromtimestamp(seconds, UTC) if seconds else None

    TemplateSource.objects.filter(node=node).exclude(source_id__in=[s.id for s in sources]).delete()
    for position, source in enumerate(sources):
        row, item = status.get(source.id) or {}, news.get(source.id)
        TemplateSource.objects.update_or_create(
            node=node,
            source_id=source.id,
            defaults={
                "type": source.type,
                "url": source.url,
                "enabled": source.enabled,
                "signed": bool(source.keyring),
                "position": position,
                "last_attempt": when(row.get("attempt")),
                "last_success": when(row.get("success")),
                "last_error": row.get("error") or "",
                "count": row.get("count"),
                "news_headline": item.headline[:255] if item else "",
                "news_text": item.text if item else "",
            },
        )
