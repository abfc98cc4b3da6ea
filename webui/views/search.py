"""Datacenter → Search: every resource the user may see in one table (nodes, containers, storages), filtered as
one types (words match the type, ID, name, node, status and tags; ``?q=`` fills the box for a link)."""

from __future__ import annotations

from django.shortcuts import render
from django.urls import reverse

from webui.context import Layout


def rows_for(layout: Layout) -> list[dict]:
    rows = []
    for entry in layout.tree:
        node = entry["node"]
        rows.append(
            {
                "type": "node",
                "id": node.name,
                "name": node.name,
                "node": node.name,
                "status": "online" if node.online else "offline",
                "tags": [],
                "url": reverse("node", args=[node.name]) if entry["audit"] else "",
            }
        )
        for storage in entry["storages"]:
            rows.append(
                {
                    "type": "storage",
                    "id": f"{node.name}/{storage.name}",
                    "name": storage.name,
                    "node": node.name,
                    "status": storage.type,
                    "tags": [],
                    "url": "",
                }
            )
        for ct in entry["containers"]:
            rows.append(
                {
                    "type": "lxc",
                    "id": str(ct.ctid),
                    "name": ct.hostname,
                    "node": node.name,
                    "status": ct.status,
                    "tags": ct.tags,
                    "url": reverse("ct", args=[ct.ctid]),
                }
            )
    for row in rows:
        row["search"] = " ".join(
            [row["type"], row["id"], row["name"], row["node"], row["status"], *row["tags"]]
        ).lower()
    return rows


def search_page(request):
    layout = Layout.of(request)
    return render(request, "webui/search.html", {"rows": rows_for(layout), "q": request.GET.get("q", "")[:200]})
