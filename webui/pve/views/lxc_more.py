"""A container's snapshots, clone, resize, interfaces and ``/nodes/{node}/vzdump``: one action each, the job's
UPID as the answer."""

from __future__ import annotations

from webui.actions import backups as backup_actions
from webui.actions import containers as actions
from webui.models import Container
from webui.pve.errors import PveError, param_error
from webui.pve.router import Call, route
from webui.pve.schema import NODE, SNAPNAME, VMID, P
from webui.pve.views.common import container_of, node_of

BOOL = P("boolean")


@route("/nodes/{node}/lxc/{vmid}/snapshot", "GET")
def snapshot_list(call: Call):
    params = call.params({"node": NODE, "vmid": VMID})
    container = container_of(call, params["node"], params["vmid"])
    out = []
    for snap in container.snapshots:
        item = {"name": snap.get("name"), "description": snap.get("description", "")}
        if snap.get("snaptime"):
            item["snaptime"] = int(snap["snaptime"])
        if snap.get("parent"):
            item["parent"] = snap["parent"]
        out.append(item)
    if not any(s["name"] == "current" for s in out):
        out.append(
            {"name": "current", "description": "You are here!", "running": 1 if container.status == "running" else 0}
        )
    return out


@route("/nodes/{node}/lxc/{vmid}/snapshot", "POST")
def snapshot_create(call: Call):
    params = call.params({"node": NODE, "vmid": VMID, "snapname": SNAPNAME, "description": P(max_length=8192)})
    container = container_of(call, params["node"], params["vmid"], "VM.Snapshot")
    return _snapshot(call, container, "snapshot", params["snapname"], params.get("description", ""))


def _snapshot(call: Call, container: Container, operation: str, name: str, description: str = "") -> str:
    if operation != "snapshot" and name not in {s.get("name") for s in container.snapshots}:
        raise PveError(500, f"snapshot '{name}' does not exist")
    return actions.snapshot(call.access, container, operation, name, description, address=call.address).upid


@route("/nodes/{node}/lxc/{vmid}/snapshot/{snapname}", "GET")
def snapshot_index(call: Call):
    params = call.params({"node": NODE, "vmid": VMID, "snapname": SNAPNAME})
    container = container_of(call, params["node"], params["vmid"])
    if params["snapname"] not in {s.get("name") for s in container.snapshots}:
        raise PveError(500, f"snapshot '{params['snapname']}' does not exist")
    return [{"rel": "rollback"}, {"rel": "config"}]


@route("/nodes/{node}/lxc/{vmid}/snapshot/{snapname}", "DELETE")
def snapshot_delete(call: Call):
    params = call.params({"node": NODE, "vmid": VMID, "snapname": SNAPNAME, "force": BOOL})
    container = container_of(call, params["node"], params["vmid"], "VM.Snapshot")
    return _snapshot(call, container, "delete", params["snapname"])


@route("/nodes/{node}/lxc/{vmid}/snapshot/{snapname}/rollback", "POST")
def snapshot_rollback(call: Call):
    params = call.params({"node": NODE, "vmid": VMID, "snapname": SNAPNAME, "start": BOOL})
    container = container_of(call, params["node"], params["vmid"], "VM.Snapshot")
    return _snapshot(call, container, "rollback", params["snapname"])


@route("/nodes/{node}/lxc/{vmid}/clone", "POST")
def clone(call: Call):
    spec = {
        "node": NODE,
        "vmid": VMID,
        "newid": P("integer", optional=False, minimum=100, maximum=999_999_999),
        "hostname": P(max_length=253),
        "description": P(max_length=8192),
        "full": BOOL,
        "storage": P(),
        "snapname": P(),
        "pool": P(),
        "target": P(),
        "bwlimit": P("number", minimum=0),
    }
    params = call.params(spec)
    container = container_of(call, params["node"], params["vmid"], "VM.Clone")
    if params.get("target") and params["target"] != params["node"]:
        node_of(params["target"])
        raise param_error({"target": "a clone stays on its container's node here"})
    return actions.clone(
        call.access,
        container,
        params["newid"],
        snapshot_name=params.get("snapname"),
        full=bool(params.get("full")),
        storage=params.get("storage"),
        hostname=params.get("hostname"),
        address=call.address,
    ).upid


@route("/nodes/{node}/lxc/{vmid}/resize", "PUT")
def resize(call: Call):
    spec = {
        "node": NODE,
        "vmid": VMID,
        "disk": P(optional=False, pattern=r"rootfs|mp\d{1,3}"),
        "size": P(optional=False, pattern=r"\+?\d+(\.\d+)?[KMGT]?"),
        "digest": P(max_length=64),
    }
    params = call.params(spec)
    container = container_of(call, params["node"], params["vmid"], "VM.Config")
    if params.get("digest") and container.digest and params["digest"] != container.digest:
        raise PveError(500, "detected modified configuration - file changed by other user? Try again.")
    return actions.resize(call.access, container, params["disk"], params["size"], address=call.address).upid


@route("/nodes/{node}/lxc/{vmid}/interfaces", "GET")
def interfaces(call: Call):
    """The container's interfaces with their MACs (its config) and addresses (as its node last read them)."""
    params = call.params({"node": NODE, "vmid": VMID})
    container = container_of(call, params["node"], params["vmid"])
    if container.status != Container.Status.RUNNING:
        raise PveError(500, f"CT {container.ctid} not running")
    out = [{"name": "lo", "hwaddr": "00:00:00:00:00:00", "inet": "127.0.0.1/8", "inet6": "::1/128"}]
    from engine.network.nics import parse_nic

    ipv4, ipv6 = list(container.ipv4 or []), list(container.ipv6 or [])
    for key in sorted(k for k in (container.config or {}) if k.startswith("net") and k[3:].isdigit()):
        nic = parse_nic(int(key[3:]), str(container.config[key]))
        item = {"name": nic.name, "hwaddr": (nic.hwaddr or "").lower()}
        if ipv4:
            item["inet"] = ipv4.pop(0)
        if ipv6:
            item["inet6"] = ipv6.pop(0)
        out.append(item)
    return out


@route("/nodes/{node}/vzdump", "POST")
def vzdump(call: Call):
    """One container's backup (Proxmox's ``vmid``; a list, ``all`` or a pool is for backup jobs here)."""
    spec = {
        "node": NODE,
        "vmid": P(optional=False, pattern=r"\d+"),
        "storage": P(default="local"),
        "mode": P(enum=("snapshot", "suspend", "stop"), default="snapshot"),
        "compress": P(enum=("0", "1", "gzip", "zstd"), default="zstd"),
        "notes-template": P(max_length=1024),
        "protected": BOOL,
        "remove": BOOL,
        "mailnotification": P(enum=("always", "failure")),
    }
    params = call.params(spec)
    node_of(params["node"])
    container = container_of(call, params["node"], int(params["vmid"]), "VM.Backup")
    compress = {"0": "none", "1": "zstd"}.get(params["compress"], params["compress"])
    data = {
        "storage": params["storage"],
        "mode": params["mode"],
        "compress": compress,
        "notes": params.get("notes-template", ""),
        "protected": bool(params.get("protected")),
    }
    return backup_actions.backup_now(call.access, container, data, address=call.address).upid
