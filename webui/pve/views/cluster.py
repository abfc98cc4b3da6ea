"""``/version``, ``/cluster/resources``, ``/cluster/nextid``, ``/nodes``, ``/nodes/{node}/status``, ``/pools``."""

from __future__ import annotations

from django.db.models.fields.json import KT
from django.utils import timezone

from webui.forms.create import propose_ctid
from webui.models import Container, MetricSample, Node, Pool, StorageMirror
from webui.models.inventory import RUNNING_FOR, NodePresence
from webui.pve.errors import PveError, param_error
from webui.pve.router import Call, route
from webui.pve.schema import NODE, P
from webui.pve.views.common import need, node_of

# The Proxmox VE release whose API this mapping follows; clients gate features on it (Ansible: >= 4.2).
PVE_VERSION, PVE_RELEASE = "8.2.4", "8.2"
GUEST_VALUES = ["ctid", "node_id", "pool__name", "hostname", "status", "cpu"]
GUEST_VALUES += ["memory_used", "memory_limit"]
# The config keys a guest row shows, read in SQL (``->>``): no row's whole config is decoded for a list.
CONFIG_KEYS = ("memory", "swap", "cores", "tags", "lock", "template")
GUEST_COMPUTED = {**{f"config_{key}": KT(f"config__{key}") for key in CONFIG_KEYS}, "running_for": RUNNING_FOR}


@route("/", "GET")
def root(call: Call):
    call.params({})
    return [{"subdir": s} for s in ("version", "cluster", "nodes", "storage", "access", "pools")]


@route("/version", "GET")
def version(call: Call):
    call.params({})
    return {"version": PVE_VERSION, "release": PVE_RELEASE, "repoid": "caisson", "console": "xtermjs"}


def guest(row: dict, nodes: NodePresence) -> dict:
    """A container as Proxmox's resource and ``lxc`` lists show it, from a ``values()`` row (``GUEST_VALUES``)."""
    config = {key: row[f"config_{key}"] for key in CONFIG_KEYS if row[f"config_{key}"] is not None}
    status = nodes.status(row["status"], row["node_id"])  # "unknown" on an offline node, as Proxmox's
    running = status == "running"
    running_for = row["running_for"]
    memory = int(config.get("memory", 512)) * 1024 * 1024
    return {
        "id": f"lxc/{row['ctid']}",
        "type": "lxc",
        "vmid": row["ctid"],
        "name": row["hostname"],
        "node": nodes.names[row["node_id"]],
        "status": status if status == "unknown" else "running" if running else "stopped",
        "pool": row["pool__name"] or None,
        "template": 1 if str(config.get("template", "0")) == "1" else 0,
        "maxcpu": int(config.get("cores") or 0) or None,
        "cpu": row["cpu"] or 0 if running else 0,
        "maxmem": row["memory_limit"] or memory,
        "mem": row["memory_used"] or 0 if running else 0,
        "maxswap": int(config.get("swap", 512)) * 1024 * 1024,
        "uptime": max(0, int(running_for.total_seconds())) if running and running_for is not None else 0,
        "tags": config.get("tags", ""),
        "lock": config.get("lock", ""),
        "disk": 0,
        "maxdisk": 0,
    }


def values_of(container: Container) -> dict:
    """A container's ``GUEST_VALUES`` and ``GUEST_COMPUTED`` row, from the model instance."""
    started = container.started_at
    return {
        **{k: getattr(container, k) for k in GUEST_VALUES if "__" not in k},
        **{f"config_{key}": (container.config or {}).get(key) for key in CONFIG_KEYS},
        "pool__name": container.pool.name if container.pool_id else None,
        "running_for": timezone.now() - started if started else None,
    }


def guests(call: Call, queryset=None) -> list[dict]:
    rows = call.access.visible_containers(queryset if queryset is not None else Container.objects.all())
    rows = list(rows.exclude(status=Container.Status.CREATING).order_by("ctid").values(*GUEST_VALUES, **GUEST_COMPUTED))
    nodes = NodePresence()
    out = []
    for row in rows:
        item = guest(row, nodes)
        out.append({k: v for k, v in item.items() if v is not None})
    return out


def node_row(node: Node) -> dict:
    sample = MetricSample.objects.filter(scope=f"node/{node.name}", step=10).order_by("-ts").first()
    return {
        "id": f"node/{node.name}",
        "type": "node",
        "node": node.name,
        "status": "online" if node.online else "offline",
        "level": "",
        "maxcpu": node.cpus,
        "cpu": (sample.cpu / node.cpus) if sample and node.cpus else 0,
        "maxmem": node.memory_total,
        "mem": sample.memory if sample else 0,
    }


def storage_row(storage: StorageMirror) -> dict:
    return {
        "id": f"storage/{storage.node.name}/{storage.name}",
        "type": "storage",
        "storage": storage.name,
        "node": storage.node.name,
        "plugintype": storage.type,
        "content": ",".join(storage.content),
        "status": "available" if storage.enabled else "unknown",
        "shared": 0,
        "disk": storage.used,
        "maxdisk": storage.total,
    }


@route("/cluster/resources", "GET")
def resources(call: Call):
    kind = call.params({"type": P(enum=("vm", "storage", "node", "sdn", "pool"))}).get("type")
    out: list[dict] = []
    if kind in (None, "vm"):
        out += guests(call)
    if kind in (None, "node"):
        out += [node_row(n) for n in Node.objects.all() if call.access.can("Sys.Audit", n)]
    if kind in (None, "storage"):
        out += [
            storage_row(s)
            for s in StorageMirror.objects.select_related("node")
            if call.access.can("Datastore.Audit", s)
        ]
    if kind in (None, "pool"):
        out += [
            {"id": f"/pool/{p.name}", "type": "pool", "pool": p.name}
            for p in Pool.objects.all()
            if call.access.can("Pool.Audit", p)
        ]
    return out


@route("/cluster/nextid", "GET")
def nextid(call: Call):
    vmid = call.params({"vmid": P("integer", minimum=100, maximum=999_999_999)}).get("vmid")
    if vmid is None:
        return str(propose_ctid())
    if Container.objects.filter(ctid=vmid).exists():
        raise param_error({"vmid": f"VM {vmid} already exists"})
    return str(vmid)


@route("/nodes", "GET")
def nodes(call: Call):
    call.params({})
    return [node_row(n) for n in Node.objects.all() if call.access.can("Sys.Audit", n)]


@route("/nodes/{node}", "GET")
def node_index(call: Call):
    node_of(call.params({"node": NODE})["node"])
    names = ["lxc", "status", "storage", "tasks", "aplinfo", "vzdump"]
    return [{"name": n} for n in names]


@route("/nodes/{node}/status", "GET")
def node_status(call: Call):
    node = node_of(call.params({"node": NODE})["node"])
    need(call, "Sys.Audit", obj=node)
    row = node_row(node)
    return {
        "cpu": row["cpu"],
        "cpuinfo": {"cpus": node.cpus, "sockets": 1, "model": ""},
        "memory": {"total": node.memory_total, "used": row["mem"], "free": max(0, node.memory_total - row["mem"])},
        "kversion": f"Linux {(node.info or {}).get('kernel', '')}",
        "pveversion": f"pve-manager/{PVE_VERSION}/caisson",
        "uptime": 0,
        "status": row["status"],
    }


@route("/pools", "GET")
def pools(call: Call):
    wanted = call.params({"poolid": P(), "type": P(enum=("qemu", "lxc", "storage"))}).get("poolid")
    rows = Pool.objects.all() if wanted is None else Pool.objects.filter(name=wanted)
    out = []
    for pool in rows:
        if not call.access.can("Pool.Audit", pool):
            continue
        item = {"poolid": pool.name, "comment": pool.comment}
        if wanted is not None:
            item["members"] = guests(call, Container.objects.filter(pool=pool))
        out.append(item)
    return out


@route("/pools/{poolid}", "GET")
def pool(call: Call):
    name = call.params({"poolid": P(optional=False), "type": P(enum=("qemu", "lxc", "storage"))})["poolid"]
    row = Pool.objects.filter(name=name).first()
    if row is None:
        raise PveError(500, f"pool '{name}' does not exist")
    need(call, "Pool.Audit", obj=row)
    return {"comment": row.comment, "members": guests(call, Container.objects.filter(pool=row))}
