"""``POST /nodes/{node}/lxc/{vmid}/migrate``: Proxmox's container migration (``target``, ``restart``,
``online``), checked as Proxmox checks it (VM.Migrate on ``/vms/{vmid}``); the job's UPID as the answer."""

from __future__ import annotations

from webui.actions import migrate as actions
from webui.pve.router import Call, route
from webui.pve.schema import NODE, VMID, P
from webui.pve.views.common import container_of

BOOL = P("boolean")


@route("/nodes/{node}/lxc/{vmid}/migrate", "POST")
def migrate(call: Call):
    spec = {
        "node": NODE,
        "vmid": VMID,
        "target": NODE,
        "restart": BOOL,
        "online": BOOL,
        "timeout": P("integer", minimum=0),
        "target-storage": P(),
        "bwlimit": P("number", minimum=0),
        "drop-snapshots": BOOL,  # Caisson's own: Proxmox refuses a container whose snapshots cannot travel
    }
    params = call.params(spec)
    container = container_of(call, params["node"], params["vmid"], "VM.Migrate")
    return actions.migrate(
        call.access,
        container,
        params["target"],
        restart=bool(params.get("restart")),
        online=bool(params.get("online")),
        address=call.address,
        drop_snapshots=bool(params.get("drop-snapshots")),
    ).upid
