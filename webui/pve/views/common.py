"""What the handlers share: a node or a container by Proxmox's path, the rights Proxmox asks, a job's wait."""

from __future__ import annotations

import time

from webui.models import Container, Job, Node
from webui.pve.errors import PveError, config_missing, no_such_node, permission_failed, pve_path
from webui.pve.router import Call


def node_of(name: str) -> Node:
    node = Node.objects.filter(name=name).first()
    if node is None:
        raise no_such_node(name)
    return node


def need(call: Call, privilege: str, path: str = "/", obj=None) -> None:
    """Proxmox's ``check`` of a handler's permissions, refused as it words it."""
    if not call.access.can(privilege, obj, path):
        raise permission_failed(pve_path(obj.path if obj is not None else path), privilege)


def container_of(call: Call, node: str, vmid: int, privilege: str = "VM.Audit") -> Container:
    """The container ``vmid`` on ``node``: refused without ``privilege`` on ``/vms/<vmid>`` whether or not it
    exists (Proxmox checks the path first), then "does not exist" if it is not there."""
    node_row = node_of(node)
    if privilege not in call.access.ctid_privileges(vmid, node):
        raise permission_failed(f"/vms/{vmid}", privilege)
    container = Container.objects.select_related("node", "pool").filter(ctid=vmid, node=node_row).first()
    if container is None:
        raise config_missing(node, vmid)
    return container


def wait(job: Job, timeout: float = 120.0) -> Job:
    """Wait for a job whose Proxmox counterpart answers only when done (a config change); 500 if it failed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db(fields=["status", "message"])
        if not job.active:
            if job.status != Job.Status.OK:
                raise PveError(500, job.message or f"{job.kind} {job.status}")
            return job
        time.sleep(0.1)
    raise PveError(500, f"{job.kind} did not end within {timeout:g} s (task {job.upid})")
