"""The container page's Migrate form and the node page's Migrate all (node evacuation): both queue the jobs
of ``webui.actions.migrate``, which checks VM.Migrate on each container."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views.decorators.http import require_POST

from webui.access import access_for
from webui.actions import migrate as actions
from webui.models import Node
from webui.views.common import client_address, container_or_gone, run_action


def migrate_context(access, container) -> dict:
    """What the Migrate form offers: the other nodes that are online, and whether the user may migrate."""
    targets = [n.name for n in Node.objects.exclude(pk=container.node_id).order_by("name") if n.online]
    return {"can_migrate": access.can("VM.Migrate", container), "migrate_targets": targets}


def node_migrate_context(node) -> dict:
    return {"migrate_targets": [n.name for n in Node.objects.exclude(pk=node.pk).order_by("name") if n.online]}


@require_POST
def migrate(request, ctid: int):
    container, gone = container_or_gone(request, ctid)
    if gone:
        return gone
    target = request.POST.get("target", "")
    return run_action(
        request,
        lambda: actions.migrate(
            access_for(request),
            container,
            target,
            restart=request.POST.get("mode") == "restart",
            online=request.POST.get("mode") == "online",
            address=client_address(request),
            drop_snapshots=request.POST.get("drop_snapshots") == "on",
        ),
        f"migration of CT {ctid} to {target} queued (job {{job.pk}})",
        reverse("ct", args=[ctid]),
    )


@require_POST
def migrate_all(request, name: str):
    node = get_object_or_404(Node, name=name)
    target = request.POST.get("target", "")
    jobs: list = []

    def act():
        jobs.extend(
            actions.migrate_all(
                access_for(request),
                node,
                target,
                restart=bool(request.POST.get("restart")),
                address=client_address(request),
            )
        )
        return jobs[0] if jobs else None

    return run_action(
        request,
        act,
        f"migration of the containers of {name} to {target} queued",
        reverse("node", args=[name]),
    )
