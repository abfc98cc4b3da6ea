"""What every page's layout needs: the user's top-level rights, the resource tree, the task panel.

The tree and the task panel are computed only when a template shows them
(the login page and JSON answers never pay for them).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from django.db.models import Q

from webui.access import access_for
from webui.models import Container, Job, Node, StorageMirror
from webui.models.inventory import NodePresence, split_tags

TASK_PANEL_SIZE = 12
ROW_FIELDS = ("ctid", "hostname", "status", "ipv4", "node_id", "pool_id", "unprivileged", "config__tags")


@dataclass(slots=True, frozen=True)
class NodeName:
    name: str


@dataclass(slots=True, frozen=True)
class ContainerRow:
    """What the tree and the container table show of a container: a plain row, not a model instance
    (1,000 containers would otherwise build 2,000 model objects and decode every config per page)."""

    ctid: int
    hostname: str
    status: str
    ipv4: list
    node_id: int
    node: NodeName
    pool_id: int | None
    unprivileged: bool = True
    tags_text: str | None = None  # the config's "tags" value

    @property
    def path(self) -> str:
        return f"/ct/{self.ctid}"

    @property
    def tags(self) -> list[str]:
        return split_tags(self.tags_text)


class Layout:
    """The resource tree (only what the user may see), the recent jobs, and the live subscriptions."""

    def __init__(self, request):
        self.request = request
        self.access = access_for(request)

    @classmethod
    def of(cls, request) -> Layout:
        """The request's layout, made once (the view and the context processor share it)."""
        cached = getattr(request, "_caisson_layout", None)
        if cached is None:
            cached = request._caisson_layout = cls(request)
        return cached

    @cached_property
    def datacenter_audit(self) -> bool:
        return "Sys.Audit" in self.access.privileges("/")

    @cached_property
    def containers(self) -> list[ContainerRow]:
        rows = list(self.access.visible_containers(Container.objects.all()).order_by("ctid").values_list(*ROW_FIELDS))
        nodes = NodePresence()  # an offline node's containers show as "unknown"
        names = {pk: NodeName(name) for pk, name in nodes.names.items()}
        return [
            ContainerRow(
                ctid, hostname, nodes.status(status, node_id), ipv4, node_id, names[node_id], pool_id, priv, tags
            )
            for ctid, hostname, status, ipv4, node_id, pool_id, priv, tags in rows
        ]

    @cached_property
    def tree(self) -> list[dict]:
        by_node: dict[int, list[ContainerRow]] = {}
        for container in self.containers:
            by_node.setdefault(container.node_id, []).append(container)
        storages: dict[int, list[StorageMirror]] = {}
        for storage in StorageMirror.objects.all():
            if self.access.can("Datastore.Audit", storage):
                storages.setdefault(storage.node_id, []).append(storage)
        nodes = []
        for node in Node.objects.all():
            audit = "Sys.Audit" in self.access.privileges(node.path)
            templates = audit or self.access.can("Datastore.AllocateTemplate", node)
            if not (audit or by_node.get(node.pk) or templates):
                continue
            nodes.append(
                {
                    "node": node,
                    "audit": audit,
                    "containers": by_node.get(node.pk, []),
                    "templates": templates,
                    "storages": storages.get(node.pk, []),
                }
            )
        return nodes

    @cached_property
    def can_create(self) -> bool:
        return any(self.access.can("VM.Allocate", node) for node in Node.objects.all())

    @cached_property
    def jobs(self) -> list[Job]:
        """Running jobs first, then the most recent ones the user may see."""
        jobs = Job.objects.select_related("node", "user")
        if not self.datacenter_audit:
            paths = [c.path for c in self.containers]
            paths += [entry["node"].path for entry in self.tree if entry["audit"]]
            jobs = jobs.filter(Q(user_id=getattr(self.access.user, "id", None)) | Q(path__in=paths))
        active = list(jobs.filter(status__in=Job.ACTIVE)[:TASK_PANEL_SIZE])
        recent = list(jobs.exclude(status__in=Job.ACTIVE)[: max(0, TASK_PANEL_SIZE - len(active))])
        return active + recent

    @cached_property
    def subscriptions(self) -> list[str]:
        """What the page's websocket follows for the tree and the task panel."""
        if self.datacenter_audit:
            return ["dc"]
        wanted = [f"ct/{c.ctid}" for c in self.containers]
        wanted += [f"node/{entry['node'].name}" for entry in self.tree if entry["audit"]]
        return wanted


def layout(request) -> dict:
    if not request.user.is_authenticated:
        return {}
    access = access_for(request)
    return {
        "can": {
            priv: priv in access.privileges("/")
            for priv in ("Sys.Audit", "Sys.Modify", "Permissions.Modify", "VM.Allocate", "Datastore.AllocateTemplate")
        },
        "layout": Layout.of(request),
    }
