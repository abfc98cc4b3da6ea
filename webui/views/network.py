"""Node -> Network: the node's bridges and other interfaces, as Proxmox's node Network panel.

Sys.Audit on the node shows the page; Sys.Modify creates, edits, deletes and applies
(``webui.actions.network``), each a job on the node.  What the page shows comes from the mirror.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from webui.access import access_for
from webui.actions import network as actions
from webui.models import Node
from webui.nic_rights import managed_bridges
from webui.views.common import client_address, run_action

TEXT_FIELDS = ("address", "address6", "vids", "pool", "dhcp", "mtu")


def network_page(request, name: str):
    node = get_object_or_404(Node, name=name)
    access = access_for(request)
    if not access.can("Sys.Audit", node):
        raise PermissionDenied(f"permission denied: Sys.Audit on {node.path} is required to see its network")
    bridges = managed_bridges(node)
    interfaces = actions.host_interfaces(node)
    editing = bridges.get(request.GET.get("edit", ""))
    return render(
        request,
        "webui/network.html",
        {
            "node": node,
            "bridges": list(bridges.values()),
            "others": [i for n, i in interfaces.items() if n not in bridges],
            "port_choices": [n for n, i in interfaces.items() if i["kind"] != "bridge"],
            "editing": editing,
            "can_modify": access.can("Sys.Modify", node),
        },
    )


def fields_of(post) -> dict:
    """The form's fields as the action takes them (a checkbox absent is off; empty text is unset)."""
    fields: dict = {k: post[k].strip() for k in TEXT_FIELDS if post.get(k, "").strip()}
    fields["ports"] = [p for p in post.getlist("ports") if p]
    fields["vlan_aware"] = post.get("vlan_aware") in ("1", "on", "yes")
    fields["nat"] = post.get("nat") in ("1", "on", "yes")
    return fields


@require_POST
def network_action(request, name: str, op: str):
    """``op``: create, edit, delete, apply."""
    node = get_object_or_404(Node, name=name)
    access, address = access_for(request), client_address(request)
    iface = request.POST.get("iface", "").strip()
    calls = {
        "create": lambda: actions.bridge_job(access, node, iface, fields_of(request.POST), True, address),
        "edit": lambda: actions.bridge_job(access, node, iface, fields_of(request.POST), False, address),
        "delete": lambda: actions.delete_job(access, node, iface, address),
        "apply": lambda: actions.apply_job(access, node, address),
    }
    if op not in calls:
        raise PermissionDenied(f"no network action '{op}'")
    what = {"apply": "apply the network configuration"}.get(op, f"{op} bridge {iface}")
    return run_action(
        request, calls[op], f"{node.name}: {what} queued (job {{job.pk}})", reverse("node-network", args=[name])
    )
