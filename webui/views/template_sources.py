"""Datacenter -> Template sources: each node's catalog sources, how their last update went, their news.

Everyone with Sys.Audit on ``/`` sees the list; Sys.Modify on ``/`` adds, edits, enables, disables and
removes (``webui.actions.template_sources``, applied on the node by a job).
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from engine.templates.sources import types
from webui.access import access_for
from webui.actions.template_sources import edit_sources
from webui.models import Node, TemplateSource
from webui.views.common import client_address, run_action


def sources_page(request):
    access = access_for(request)
    if not access.can("Sys.Audit", None, "/"):
        raise PermissionDenied("permission denied: Sys.Audit on / is required to see the template sources")
    nodes = list(Node.objects.all())
    rows = {n.pk: [] for n in nodes}
    for source in TemplateSource.objects.all():
        rows.setdefault(source.node_id, []).append(source)
    editing = request.GET.get("edit")
    return render(
        request,
        "webui/template_sources.html",
        {
            "nodes": [(n, rows.get(n.pk, [])) for n in nodes],
            "types": types(),
            "editing": editing,
            "can_modify": access.can("Sys.Modify", None, "/"),
        },
    )


@require_POST
def source_action(request, name: str, op: str):
    """``op``: add, edit, enable, disable, remove; the source's id in ``id``, ``type`` and ``url`` from the form."""
    node = get_object_or_404(Node, name=name)
    post = request.POST
    source_id = post.get("id", "").strip()
    data: dict = {}
    if op in ("add", "edit"):
        data = {k: post[k].strip() for k in ("type", "url") if post.get(k, "").strip()}
        if op == "add":
            data["enabled"] = post.get("enabled", "1") in ("1", "on", "true")
    elif op in ("enable", "disable"):
        data, op = {"enabled": op == "enable"}, "edit"
    return run_action(
        request,
        lambda: edit_sources(access_for(request), node, op, source_id, data, address=client_address(request)),
        f"template source {source_id} on {node.name}: change queued (job {{job.pk}})",
        reverse("template-sources"),
    )
