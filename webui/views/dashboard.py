"""The datacenter dashboard and the node page: what runs where, how busy the nodes are; Start all, Stop all;
removing a dead node."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.http import Http404
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from webui.access import access_for
from webui.actions.nodes import power_all_job
from webui.context import Layout
from webui.models import Container, Node
from webui.views.common import client_address, run_action
from webui.views.metrics import TIMEFRAMES, latest, series, timeframe
from webui.views.migrate import node_migrate_context


def _counts(containers) -> dict:
    counts = {"running": 0, "stopped": 0, "other": 0, "total": len(containers)}
    for container in containers:
        key = container.status if container.status in ("running", "stopped") else "other"
        counts[key] += 1
    return counts


def dashboard(request):
    layout = Layout.of(request)
    frame = timeframe(request)
    access = access_for(request)
    nodes = []
    counts, now = node_counts(), timezone.now()
    for node in Node.objects.all():
        if "Sys.Audit" not in access.privileges(node.path):
            continue
        nodes.append(
            {
                "node": node,
                "latest": latest(f"node/{node.name}"),
                "chart": series(f"node/{node.name}", frame),
                "counts": counts.get(node.pk, {"running": 0, "total": 0}),
                "age": int((now - node.last_seen).total_seconds()) if node.last_seen else 10**9,
            }
        )
    return render(
        request,
        "webui/dashboard.html",
        {
            "containers": layout.containers,
            "counts": _counts(layout.containers),
            "nodes": nodes,
            "timeframe": frame,
            "timeframes": TIMEFRAMES,
            "page_subscribe": [f"node/{n['node'].name}" for n in nodes],
            "offline_after": settings.CAISSON_NODE_OFFLINE_AFTER,
        },
    )


def node_counts() -> dict[int, dict[str, int]]:
    """Containers per node, running and in all, in one query: the datacenter view's node list shows them for
    every node (an aggregate a node's auditor may see), whatever containers the user may open."""
    rows = Container.objects.values("node").annotate(
        total=Count("pk"), running=Count("pk", filter=Q(status=Container.Status.RUNNING))
    )
    return {row["node"]: {"running": row["running"], "total": row["total"]} for row in rows}


def node_page(request, name: str):
    node = get_object_or_404(Node, name=name)
    if "Sys.Audit" not in access_for(request).privileges(node.path):
        raise PermissionDenied(f"permission denied: Sys.Audit on {node.path} is required to see this node")
    frame = timeframe(request)
    containers = list(
        access_for(request).visible_containers(Container.objects.filter(node=node).select_related("node"))
    )
    if not node.online:
        for container in containers:  # shown, not saved: the node's return resyncs the mirror's last word
            container.status = Container.Status.UNKNOWN
    return render(
        request,
        "webui/node.html",
        {
            "node": node,
            "containers": containers,
            "counts": _counts(containers),
            "latest": latest(f"node/{name}"),
            "chart": series(f"node/{name}", frame),
            "timeframe": frame,
            "timeframes": TIMEFRAMES,
            "page_subscribe": [f"node/{name}"],
            "can_power": access_for(request).can("VM.PowerMgmt", node),
            "can_remove": not node.online and access_for(request).can("Sys.Modify", path="/"),
            **node_migrate_context(node),
        },
    )


@require_POST
def node_power(request, name: str, kind: str):
    """The node page's Start all (onboot containers, in startup order) and Stop all (reverse order)."""
    if kind not in ("startall", "stopall"):
        raise Http404(f"no node action '{kind}'")
    node = get_object_or_404(Node, name=name)
    return run_action(
        request,
        lambda: power_all_job(access_for(request), node, kind, {}, address=client_address(request)),
        f"{kind} queued (job {{job.pk}})",
        reverse("node", args=[node.name]),
    )


@require_POST
def node_remove(request, name: str):
    """The node page's Remove, offered for a node that is offline: see ``webui.actions.cluster.remove_node``."""
    from webui.actions.cluster import remove_node

    node = get_object_or_404(Node, name=name)
    return run_action(
        request,
        lambda: remove_node(access_for(request), node, address=client_address(request)),
        f"node {name} removed",
        "/",
    )
