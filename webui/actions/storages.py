"""Adding and removing a node's storages (Proxmox's Datacenter -> Storage): Sys.Modify on ``/`` (Proxmox asks
Datastore.Allocate on ``/storage``, a privilege Caisson's roles do not have; changing what the datacenter's
disks are is an administrator's, as Sys.Modify's other settings).  Checked here with the engine's own rules,
then a job on the node (``tasks/storages.py``) changes its ``storage.cfg``."""

from __future__ import annotations

from django.core.exceptions import ValidationError

from engine.errors import ValidationError as EngineValidationError
from engine.storage import cfg
from webui.access import Access, require
from webui.models import Job, Node, StorageMirror
from webui.models.queue import submit

FIELDS = ("storage", "type", "path", "content")


def add_job(access: Access, node: Node, data: dict, address: str | None = None) -> Job:
    require(access, "Sys.Modify", path="/", address=address)
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ValidationError({key: [f"unknown field (fields: {', '.join(FIELDS)})"] for key in unknown})
    values = {k: data.get(k) for k in FIELDS}
    missing = [k for k in ("storage", "type", "path") if not isinstance(values[k], str) or not values[k].strip()]
    if missing:
        raise ValidationError({k: ["this field is required (a string)"] for k in missing})
    content = values["content"] if isinstance(values["content"], str) and values["content"].strip() else "rootdir"
    props = {"path": values["path"].strip(), "content": content}
    try:
        cfg.make_def(values["type"], values["storage"].strip(), props, "storage")
    except EngineValidationError as exc:
        raise ValidationError({exc.key or "storage": [str(exc).removeprefix("storage: ")]}) from None
    name = values["storage"].strip()
    if StorageMirror.objects.filter(node=node, name=name).exists():
        raise ValidationError({"storage": [f"storage '{name}' already exists on node '{node.name}'"]})
    params = {"type": values["type"], **props}
    return submit("storageadd", node, f"/storage/{name}", name, user=access.user, params=params, address=address)


def remove_job(access: Access, node: Node, name: str, address: str | None = None) -> Job:
    require(access, "Sys.Modify", path="/", address=address)
    if not StorageMirror.objects.filter(node=node, name=name).exists():
        raise ValidationError({"storage": [f"node '{node.name}' has no storage '{name}'"]})
    return submit("storagedel", node, f"/storage/{name}", name, user=access.user, address=address)
