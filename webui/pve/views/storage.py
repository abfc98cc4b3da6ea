"""``/nodes/{node}/storage`` (and its ``content``: templates and backups) and ``/nodes/{node}/aplinfo``."""

from __future__ import annotations

from webui.actions.backups import visible_archives
from webui.actions.nodes import template_job
from webui.models import BackupArchive, CatalogEntry, StorageMirror, StoredTemplate
from webui.pve.errors import PveError
from webui.pve.router import Call, route
from webui.pve.schema import NODE, STORAGE, P
from webui.pve.views.common import need, node_of

CONTENT = ("vztmpl", "backup", "rootdir", "images", "iso", "snippets", "import")


def _storages(node) -> list[StorageMirror]:
    rows = list(StorageMirror.objects.filter(node=node).select_related("node"))
    if not any(s.name == "local" for s in rows):  # every node has its local storage, reported or not
        rows.insert(0, StorageMirror(node=node, name="local", type="dir", content=["vztmpl", "backup", "rootdir"]))
    return rows


@route("/nodes/{node}/storage", "GET")
def storage_list(call: Call):
    spec = {"node": NODE, "storage": STORAGE, "content": P(), "enabled": P("boolean"), "target": P(), "format": P()}
    params = call.params(spec)
    node = node_of(params["node"])
    wanted = set((params.get("content") or "").split(",")) - {""}
    out = []
    for s in _storages(node):
        if not call.access.can("Datastore.Audit", s) or (params.get("storage") and s.name != params["storage"]):
            continue
        if wanted and not wanted & set(s.content):
            continue
        out.append(
            {
                "storage": s.name,
                "type": s.type,
                "content": ",".join(s.content),
                "total": s.total,
                "used": s.used,
                "avail": max(0, s.total - s.used),
                "active": 1,
                "enabled": 1 if s.enabled else 0,
                "shared": 0,
            }
        )
    return out


@route("/nodes/{node}/storage/{storage}", "GET")
def storage_index(call: Call):
    params = call.params({"node": NODE, "storage": STORAGE})
    _storage(call, params)
    return [{"subdir": "content"}, {"subdir": "status"}]


@route("/nodes/{node}/storage/{storage}/status", "GET")
def storage_status(call: Call):
    s = _storage(call, call.params({"node": NODE, "storage": STORAGE}))
    return {
        "type": s.type,
        "content": ",".join(s.content),
        "total": s.total,
        "used": s.used,
        "avail": max(0, s.total - s.used),
        "active": 1,
        "enabled": 1 if s.enabled else 0,
        "shared": 0,
    }


def _storage(call: Call, params: dict) -> StorageMirror:
    node = node_of(params["node"])
    found = next((s for s in _storages(node) if s.name == params["storage"]), None)
    if found is None:
        raise PveError(500, f"storage '{params['storage']}' does not exist")
    need(call, "Datastore.Audit", obj=found)
    return found


def _template_format(name: str) -> str:
    """Proxmox's format of a template archive: ``tzst``, ``tgz``, ``txz`` or ``tar``."""
    suffix = name.rsplit(".tar.", 1)[-1] if ".tar." in name else ""
    return {"zst": "tzst", "gz": "tgz", "xz": "txz"}.get(suffix, "tar")


@route("/nodes/{node}/storage/{storage}/content", "GET")
def content(call: Call):
    spec = {"node": NODE, "storage": STORAGE, "content": P(enum=CONTENT), "vmid": P("integer", minimum=100)}
    params = call.params(spec)
    storage = _storage(call, params)
    kind, vmid = params.get("content"), params.get("vmid")
    out = []
    if kind in (None, "vztmpl") and storage.name == "local" and vmid is None:
        for t in StoredTemplate.objects.filter(node=storage.node):
            out.append(
                {
                    "volid": t.volid,
                    "content": "vztmpl",
                    "format": _template_format(t.name),
                    "size": t.size,
                    "ctime": int(t.modified.timestamp()) if t.modified else 0,
                }
            )
    if kind in (None, "backup"):
        rows = BackupArchive.objects.filter(node=storage.node, storage=storage.name).select_related("node")
        if vmid is not None:
            rows = rows.filter(ctid=vmid)
        for a in visible_archives(call.access, rows).order_by("ctid", "time"):
            out.append(
                {
                    "volid": a.volid,
                    "content": "backup",
                    "subtype": "lxc",
                    "vmid": a.ctid,
                    "format": "tar." + {"zstd": "zst", "gzip": "gz", "none": ""}.get(a.format, a.format),
                    "size": a.size,
                    "ctime": int(a.time.timestamp()),
                    "notes": a.notes,
                    "protected": 1 if a.protected else 0,
                }
            )
    return out


@route("/nodes/{node}/aplinfo", "GET")
def aplinfo(call: Call):
    node = node_of(call.params({"node": NODE})["node"])
    return [
        {
            "template": e.name,
            "package": e.name.split("_")[0],
            "type": "lxc",
            "os": e.os,
            "version": e.version,
            "section": e.section,
            "headline": e.headline,
            "description": e.description,
            "source": e.source,
        }
        for e in CatalogEntry.objects.filter(node=node, buildable=False)
    ]


@route("/nodes/{node}/aplinfo", "POST")
def aplinfo_download(call: Call):
    params = call.params({"node": NODE, "storage": P(optional=False), "template": P(optional=False, max_length=255)})
    node = node_of(params["node"])
    if params["storage"] != "local":
        raise PveError(400, "Parameter verification failed.", {"storage": "templates are stored on 'local'"})
    need(call, "Datastore.AllocateTemplate", obj=node)
    entry = CatalogEntry.objects.filter(node=node, name=params["template"], buildable=False).first()
    if entry is None:
        raise PveError(400, f"no such template '{params['template']}'")
    job = template_job(call.access, node, "download", entry.name, {"source": entry.source}, address=call.address)
    return job.upid
