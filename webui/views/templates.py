"""The template catalog and the local store of each node: download, build, remove, with live progress."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from engine import builders
from webui import template_updates
from webui.access import access_for
from webui.actions import nodes as actions
from webui.models import CatalogEntry, Job, Node, StoredTemplate, TemplateSource
from webui.views.common import client_address, run_action

TEMPLATE_KINDS = ("download", "tmplbuild", "tmplremove", "aptupdate", "ociregistrypull")


def _visible_nodes(access) -> list[Node]:
    return [
        n
        for n in Node.objects.all()
        if "Sys.Audit" in access.privileges(n.path)
        or access.can("Datastore.Audit", n)
        or access.can("Datastore.AllocateTemplate", n)
    ]


def templates_page(request):
    access = access_for(request)
    nodes = _visible_nodes(access)
    if not nodes:
        raise PermissionDenied(
            "permission denied: Datastore.Audit or Sys.Audit on a node is required to see its templates"
        )
    node = next((n for n in nodes if n.name == request.GET.get("node")), nodes[0])
    catalog: dict[str, dict[str, list[CatalogEntry]]] = {}
    for entry in CatalogEntry.objects.filter(node=node).order_by("source", "section", "name"):
        catalog.setdefault(entry.source, {}).setdefault(entry.section or "other", []).append(entry)
    active = {
        j.target: j
        for j in Job.objects.filter(
            node=node, kind__in=("download", "tmplbuild", "ociregistrypull"), status__in=Job.ACTIVE
        )
    }
    context = {
        "node": node,
        "nodes": nodes,
        "catalog": catalog,
        "active_jobs": [j.summary() for j in active.values()],
        "stored": StoredTemplate.objects.filter(node=node),
        "updates": template_updates.for_node(node),
        "sources": TemplateSource.objects.filter(node=node),
        "can_allocate": access.can("Datastore.AllocateTemplate", node),
        "page_subscribe": [f"node/{node.name}"],
    }
    if request.GET.get("fragment") == "store":
        return render(request, "webui/templates_store.html", context)
    return render(request, "webui/templates.html", context)


@require_POST
def template_action(request, name: str, kind: str):
    if kind not in TEMPLATE_KINDS:
        raise Http404(f"no template action '{kind}'")
    node = get_object_or_404(Node, name=name)
    target = request.POST.get("name", "").strip()
    params = {}
    if kind == "tmplbuild":
        offer = builders.find_offer(target)  # unknown: the job fails, naming the builders there are
        params = {"builder": offer.builder, **offer.options} if offer else {"builder": target}
    elif kind == "aptupdate":
        target = ""
    elif kind == "ociregistrypull":  # the "pull from registry" form; the password is sealed before it is recorded
        body = {k: request.POST.get(k, "").strip() for k in ("reference", "name", "username")}
        body["password"] = request.POST.get("password", "")
        target = body["reference"]
        return run_action(
            request,
            lambda: actions.oci_pull_job(access_for(request), node, body, address=client_address(request)),
            f"pull of {target} queued (job {{job.pk}})",
            reverse("templates") + f"?node={node.name}",
        )
    labels = {
        "download": "download of {t}",
        "tmplbuild": "build of {t}",
        "tmplremove": "removal of {t}",
        "aptupdate": "catalog refresh",
    }
    return run_action(
        request,
        lambda: actions.template_job(access_for(request), node, kind, target, params, address=client_address(request)),
        labels[kind].format(t=target) + " queued (job {job.pk})",
        reverse("templates") + f"?node={node.name}",
    )
