"""``/nodes/{node}/lxc``: list, create (from a template or, with ``restore``, a backup), delete, config,
status and power.  Each change is one ``webui.actions`` call; its answer is the job's UPID."""

from __future__ import annotations

import re

from webui.actions import backups as backup_actions
from webui.actions import containers as actions
from webui.actions import machine as machine_actions
from webui.actions.pools import set_pool
from webui.models import BackupArchive, Container, Pool
from webui.models.inventory import NodePresence
from webui.pve.errors import PveError, config_missing, param_error
from webui.pve.router import Call, route
from webui.pve.schema import NODE, VMID, P
from webui.pve.views.cluster import GUEST_COMPUTED, GUEST_VALUES, guest, values_of
from webui.pve.views.common import container_of, need, node_of, wait

BOOL, INT, TEXT = P("boolean"), P("integer"), P()
# Config keys as Proxmox's lxc schema names them; their values are checked by the engine's parser.
CONFIG = {
    "hostname": P(max_length=253),
    "description": P(max_length=8192),
    "cores": P("integer", minimum=1, maximum=8192),
    "cpulimit": P("number", minimum=0, maximum=8192),
    "cpuunits": P("integer", minimum=0, maximum=500000),
    "memory": P("integer", minimum=16),
    "swap": P("integer", minimum=0),
    "onboot": BOOL,
    "protection": BOOL,
    "startup": TEXT,
    "tags": TEXT,
    "nameserver": TEXT,
    "searchdomain": TEXT,
    "features": TEXT,
    "cmode": P(enum=("shell", "console", "tty")),
    "tty": P("integer", minimum=0, maximum=6),
    "console": BOOL,
    "net[n]": TEXT,
    "mp[n]": TEXT,
}
CREATE = {
    **CONFIG,
    "node": NODE,
    "vmid": VMID,
    "ostemplate": P(optional=False, max_length=255),
    "password": P(max_length=1024),
    "ssh-public-keys": TEXT,
    "unprivileged": BOOL,
    "rootfs": TEXT,
    "storage": P(default="local"),
    "start": BOOL,
    "restore": BOOL,
    "force": BOOL,
    "unique": BOOL,
    "pool": TEXT,
    "ostype": TEXT,
    "arch": P(enum=("amd64",)),
}


@route("/nodes/{node}/lxc", "GET")
def lxc_list(call: Call):
    node = node_of(call.params({"node": NODE})["node"])
    rows = call.access.visible_containers(Container.objects.filter(node=node)).exclude(status="creating")
    rows = list(rows.values(*GUEST_VALUES, **GUEST_COMPUTED))
    nodes = NodePresence()
    out = []
    for row in rows:
        item = guest(row, nodes)
        item["cpus"] = item.pop("maxcpu", None) or 1
        out.append({k: v for k, v in item.items() if v is not None and k not in ("id", "node")})
    return out


def _rootfs(params: dict) -> tuple[str, int]:
    """(storage, GiB) of a new root disk: ``rootfs=STORAGE:SIZE`` or ``storage`` with Proxmox's 4 GiB."""
    value = (params.get("rootfs") or "").split(",")[0].removeprefix("volume=")
    if not value:
        return params["storage"], 4
    found = re.fullmatch(r"([a-zA-Z][\w.-]*):(\d+(?:\.\d+)?)", value)
    if not found:
        raise param_error({"rootfs": "a new volume as STORAGE:SIZE_IN_GiB, e.g. local:8"})
    return found.group(1), int(float(found.group(2)))


@route("/nodes/{node}/lxc", "POST")
def lxc_create(call: Call):
    params = call.params(CREATE)
    node = node_of(params["node"])
    pool = None
    if params.get("pool"):
        pool = Pool.objects.filter(name=params["pool"]).first()
        if pool is None:
            raise param_error({"pool": f"pool '{params['pool']}' does not exist"})
        need(call, "Pool.Allocate", obj=pool)  # before anything is queued: set_pool checks it again after
    if params.get("restore"):
        job = _restore(call, node, params)
    else:
        storage, size = _rootfs(params)
        password = params.get("password")
        data = {
            "node": node.name,
            "ctid": params["vmid"],
            "hostname": params.get("hostname") or f"CT{params['vmid']}",
            "password": password,
            "password_confirm": password,
            "ssh_public_keys": params.get("ssh-public-keys", ""),
            "unprivileged": bool(params.get("unprivileged")),  # Proxmox's default: privileged
            "nesting": False,
            "template": params["ostemplate"],
            "storage": storage,
            "disk_size": size,
            "cpuunits": params.get("cpuunits", 100),
            "memory": params.get("memory", 512),
            "swap": params.get("swap", 512),
            "ipv4_mode": "none",
            "ipv6_mode": "none",
            "start": bool(params.get("start")),
        }
        data.update({k: params[k] for k in ("cores", "cpulimit", "nameserver", "searchdomain") if k in params})
        extra = {k: _pct(v) for k, v in params.items() if k not in CREATE or k in EXTRA_AT_CREATE}
        extra = {k: v for k, v in extra.items() if k in actions.EDITABLE_KEYS}
        job = actions.create_container(call.access, data, address=call.address, extra=extra)
    if pool is not None:
        set_pool(call.access, Container.objects.select_related("node", "pool").get(ctid=params["vmid"]), pool)
    return job.upid


# Keys CREATE declares that go into the config as they are (the rest are the wizard's fields).
EXTRA_AT_CREATE = {"description", "onboot", "protection", "startup", "tags", "features", "cmode", "tty", "console"}


def _indexed(key: str) -> bool:
    return bool(re.fullmatch(r"(net|mp)\d+", key))


def _pct(value) -> str:
    return (
        ("1" if value else "0") if isinstance(value, bool) else f"{value:g}" if isinstance(value, float) else str(value)
    )


def _restore(call: Call, node, params: dict):
    """A backup restored to ``vmid``; of the config keys only ``hostname`` is applied here (others: PUT config)."""
    ignored = sorted(k for k in params if (k in CONFIG or _indexed(k)) and k != "hostname")
    if ignored:
        raise param_error(
            {k: "not applied by a restore here; change it with PUT .../config afterwards" for k in ignored}
        )
    storage, _, name = params["ostemplate"].partition(":backup/")
    archive = BackupArchive.objects.select_related("node").filter(node=node, storage=storage, name=name).first()
    if archive is None:
        raise PveError(500, f"volume '{params['ostemplate']}' does not exist")
    data = {"ctid": params["vmid"], "force": bool(params.get("force")), "unique": bool(params.get("unique"))}
    if params.get("hostname"):
        data["hostname"] = params["hostname"]
    if params.get("rootfs") or params.get("storage") != "local":
        data["rootfs_storage"] = _rootfs(params)[0]
    return backup_actions.restore(call.access, archive, data, address=call.address)


@route("/nodes/{node}/lxc/{vmid}", "GET")
def lxc_index(call: Call):
    params = call.params({"node": NODE, "vmid": VMID})
    container_of(call, params["node"], params["vmid"])
    subdirs = ["config", "status", "snapshot", "interfaces", "clone", "resize", "template"]
    return [{"subdir": s} for s in subdirs]


@route("/nodes/{node}/lxc/{vmid}", "DELETE")
def lxc_delete(call: Call):
    spec = {"node": NODE, "vmid": VMID, "purge": BOOL, "force": BOOL, "destroy-unreferenced-disks": BOOL}
    params = call.params(spec)
    container = container_of(call, params["node"], params["vmid"], "VM.Allocate")
    # Caisson's destroy always purges: the container leaves its backup jobs and takes its grants with it.
    return actions.destroy(call.access, container, force=bool(params.get("force")), address=call.address).upid


@route("/nodes/{node}/lxc/{vmid}/config", "GET")
def config_get(call: Call):
    spec = {"node": NODE, "vmid": VMID, "current": BOOL, "snapshot": P()}
    params = call.params(spec)
    container = container_of(call, params["node"], params["vmid"])
    config = {k: _typed(k, v) for k, v in (container.config or {}).items()}
    if params.get("snapshot"):
        snap = next((s for s in container.snapshots if s.get("name") == params["snapshot"]), None)
        if snap is None:
            raise PveError(500, f"snapshot '{params['snapshot']}' does not exist")
        config = {k: _typed(k, v) for k, v in (snap.get("config") or {}).items()}
    return {**config, "digest": container.digest}


NUMERIC = {"cores", "memory", "swap", "cpuunits", "onboot", "protection", "unprivileged", "tty", "console", "template"}


def _typed(key: str, value):
    """Proxmox answers integer keys as JSON numbers."""
    text = str(value)
    return int(text) if key in NUMERIC and text.lstrip("-").isdigit() else value


@route("/nodes/{node}/lxc/{vmid}/config", "PUT")
def config_put(call: Call):
    spec = {**CONFIG, "node": NODE, "vmid": VMID, "delete": TEXT, "digest": P(max_length=64), "revert": TEXT}
    params = call.params(spec)
    container = container_of(call, params["node"], params["vmid"], "VM.Config")
    changes = {k: _pct(v) for k, v in params.items() if k not in ("node", "vmid", "delete", "digest", "revert")}
    delete = [k.strip() for k in re.split(r"[,;\s]+", params.get("delete") or "") if k.strip()]
    if params.get("digest") and container.digest and params["digest"] != container.digest:
        raise PveError(500, "detected modified configuration - file changed by other user? Try again.")
    job = actions.update_config(call.access, container, changes, delete, params.get("digest"), call.address)
    wait(job)  # Proxmox answers a container's config change once it is written
    return None


@route("/nodes/{node}/lxc/{vmid}/status", "GET")
def status_index(call: Call):
    params = call.params({"node": NODE, "vmid": VMID})
    container_of(call, params["node"], params["vmid"])
    return [{"subdir": s} for s in ("current", "start", "stop", "shutdown", "reboot", "suspend", "resume")]


@route("/nodes/{node}/lxc/{vmid}/status/current", "GET")
def status_current(call: Call):
    params = call.params({"node": NODE, "vmid": VMID})
    container = container_of(call, params["node"], params["vmid"])
    if container.status == Container.Status.CREATING:
        raise config_missing(params["node"], params["vmid"])
    row = guest(values_of(container), NodePresence())
    row.pop("id")
    row["cpus"] = row.pop("maxcpu") or 1
    row["ha"] = {"managed": 0}
    row["lock"] = (container.config or {}).get("lock") or None
    return {k: v for k, v in row.items() if v is not None}


POWER = {
    "start": {"skiplock": BOOL, "debug": BOOL},
    "stop": {"skiplock": BOOL, "overrule-shutdown": BOOL},
    "shutdown": {"timeout": P("integer", minimum=0), "forceStop": BOOL},
    "reboot": {"timeout": P("integer", minimum=0)},
}


def _power(command: str):
    def handler(call: Call):
        params = call.params({"node": NODE, "vmid": VMID, **POWER[command]})
        container = container_of(call, params["node"], params["vmid"], "VM.PowerMgmt")
        options = {}
        if command == "shutdown":
            options = {"timeout": params.get("timeout") or 60, "force_stop": bool(params.get("forceStop"))}
        return actions.power(call.access, container, command, options, address=call.address).upid

    return handler


for _command in POWER:
    route(f"/nodes/{{node}}/lxc/{{vmid}}/status/{_command}", "POST")(_power(_command))


def _freezer(action):
    """``status/suspend`` and ``status/resume``: Caisson's cgroup freezer (engine.suspend); a UPID."""

    def handler(call: Call):
        params = call.params({"node": NODE, "vmid": VMID, "skiplock": BOOL})
        container = container_of(call, params["node"], params["vmid"], "VM.PowerMgmt")
        return action(call.access, container, address=call.address).upid

    return handler


route("/nodes/{node}/lxc/{vmid}/status/suspend", "POST")(_freezer(machine_actions.suspend))
route("/nodes/{node}/lxc/{vmid}/status/resume", "POST")(_freezer(machine_actions.resume))


@route("/nodes/{node}/lxc/{vmid}/template", "POST")
def template(call: Call):
    """Convert to a template. Proxmox answers null and converts in a ``vztemplate`` worker: so does this."""
    params = call.params({"node": NODE, "vmid": VMID})
    container = container_of(call, params["node"], params["vmid"], "VM.Allocate")
    machine_actions.template(call.access, container, address=call.address)
    return None
