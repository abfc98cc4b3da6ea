"""Editing a node's template sources: checked here, applied on the node by a ``tmplsources`` job.

The list lives on the node (``template/sources.json``, :mod:`engine.templates.store`), so the web tier
checks the request the way the node will (id, type, URL: http(s), never a link-local address literal)
and queues the change; the agent mirrors the result into ``TemplateSource`` rows after the job.
Only an administrator may change it: Sys.Modify on ``/`` (a source decides what every user downloads).
"""

from __future__ import annotations

from django.core.exceptions import ValidationError

from engine.errors import ValidationError as EngineValidationError
from engine.templates.sources import Source, check_source_url, types
from webui.access import Access, require
from webui.models import Job, Node
from webui.models.queue import submit

OPS = ("add", "edit", "remove")


def _check(op: str, source_id: object, data: dict) -> dict:
    """The job's parameters; a Django ValidationError naming the field for anything wrong."""
    if op not in OPS:
        raise ValidationError({"op": [f"one of {', '.join(OPS)}"]})
    unknown = sorted(set(data) - {"type", "url", "enabled"})
    if unknown:
        raise ValidationError({key: ["unknown field"] for key in unknown})
    params = {"op": op, "source": source_id}
    if op == "remove":
        return params
    fields = {k: data[k] for k in ("type", "url", "enabled") if data.get(k) is not None}
    try:
        if op == "add":
            for key in ("type", "url"):
                if key not in fields:
                    raise ValidationError({key: ["this field is required"]})
            Source.from_dict({"id": source_id, **fields}, f"source {source_id}")
        else:
            if "type" in fields and fields["type"] not in types():
                raise ValidationError({"type": [f"one of {', '.join(types())}"]})
            if "url" in fields:
                check_source_url(fields["url"], "url")
            if "enabled" in fields and not isinstance(fields["enabled"], bool):
                raise ValidationError({"enabled": ["true or false"]})
    except EngineValidationError as exc:
        raise ValidationError({exc.key or "source": [str(exc)]}) from None
    return {**params, **fields}


def edit_sources(
    access: Access, node: Node, op: str, source_id: str, data: dict | None = None, address: str | None = None
) -> Job:
    """Add, edit (type, url, enabled) or remove one template source of ``node``."""
    require(access, "Sys.Modify", path="/", address=address)
    params = _check(op, source_id, dict(data or {}))
    # Whether the id exists is the node's to say (the mirror may lag): the job fails naming it.
    return submit("tmplsources", node, node.path, str(source_id), user=access.user, params=params, address=address)
