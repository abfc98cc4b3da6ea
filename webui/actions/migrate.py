"""Migration of containers to another node (``pct migrate``) and node evacuation (Proxmox's ``migrateall``).

Rights, as Proxmox's: VM.Migrate on each container moved; the target's storage needs
Datastore.AllocateSpace there too (the container's volumes are made on it).  Live migration (``online``) is
refused with the reason (no working CRIU on the nodes).  What the job does is in ``tasks/migrate.py``.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError

from webui.access import Access, deny, require, require_space
from webui.actions.containers import container_job, storage_of
from webui.models import Container, Job, Node
from webui.models.queue import JobRefused

ONLINE_REFUSED = (
    "live migration is not supported: CRIU cannot checkpoint containers on these nodes; migrate with restart "
    "(stop, move, start on the target)"
)


def _target(container_node: Node, target) -> Node:
    if not isinstance(target, str) or not target:
        raise ValidationError({"target": ["the name of the node to migrate to"]})
    node = Node.objects.filter(name=target).first()
    if node is None:
        raise ValidationError({"target": [f"no node named '{target}'"]})
    if node.pk == container_node.pk:
        raise ValidationError({"target": [f"the container is on node '{target}' already"]})
    if not node.online:
        raise JobRefused(f"node '{target}' is offline; it cannot receive a container", status=503)
    return node


def _checked(
    access: Access,
    container: Container,
    target: Node,
    restart: bool,
    address: str | None,
    drop_snapshots: bool = False,
) -> dict:
    require(access, "VM.Migrate", container, address=address)
    storage = storage_of((container.config or {}).get("rootfs", "").split(",")[0]) or "local"
    if "rootdir" not in (getattr(target.storages.filter(name=storage).first(), "content", None) or []):
        raise ValidationError(
            {
                "target": [
                    f"node '{target.name}' has no storage '{storage}' for container volumes (CT {container.ctid}'s)"
                ]
            }
        )
    require_space(access, [storage], address)
    if container.status == Container.Status.RUNNING and not restart:
        raise JobRefused(f"CT {container.ctid} is running; migrate it in restart mode or stop it first")
    if container.status not in (Container.Status.RUNNING, Container.Status.STOPPED):
        raise JobRefused(f"CT {container.ctid} is {container.status}; it cannot be migrated now")
    snapshots = [s.get("name") for s in container.snapshots or [] if s.get("name") != "current"]
    kind = getattr(target.storages.filter(name=storage).first(), "type", "")
    here = getattr(container.node.storages.filter(name=storage).first(), "type", "")
    if snapshots and not drop_snapshots and (kind not in ("btrfs", "overlay", "dir") or kind != here):
        # btrfs to btrfs, overlay to overlay, dir to dir (a dir storage's layout is the engine's to check)
        raise JobRefused(
            f"CT {container.ctid} has snapshots ({', '.join(snapshots)}): the target storage '{storage}' on node "
            f"'{target.name}' ({kind}) cannot keep them; they travel between storages of one kind (btrfs, "
            "overlay or dir) on both nodes; or drop the snapshots"
        )
    return {"target": target.name, "restart": bool(restart), "storage": storage, "drop_snapshots": drop_snapshots}


def migrate(
    access: Access,
    container: Container,
    target,
    restart: bool = False,
    online: bool = False,
    address: str | None = None,
    drop_snapshots: bool = False,
) -> Job:
    """One container to node ``target``: offline (stopped) or, with ``restart``, stopped, moved and started.
    Snapshots travel between storages of one kind; ``drop_snapshots`` leaves them behind."""
    require(access, "VM.Migrate", container, address=address)
    if online:
        raise ValidationError({"online": [ONLINE_REFUSED]})
    node = _target(container.node, target)
    params = _checked(access, container, node, restart, address, bool(drop_snapshots))
    return container_job(access, container, "vzmigrate", params, address)


def migrate_all(
    access: Access, node: Node, target, restart: bool = False, vms=None, address: str | None = None
) -> list[Job]:
    """Node evacuation: every container of ``node`` (or those in ``vms``) to ``target``, one job each.

    Every container is checked before any job is queued (VM.Migrate on each, the target's storage, running
    ones only with ``restart``), so a refusal queues nothing."""
    destination = _target(node, target)
    containers = list(Container.objects.filter(node=node).select_related("node", "pool").order_by("ctid"))
    if vms:
        wanted = {int(v) for v in vms} if all(str(v).isdigit() for v in vms) else None
        if wanted is None:
            raise ValidationError({"vms": ["container IDs"]})
        missing = sorted(wanted - {c.ctid for c in containers})
        if missing:
            raise ValidationError({"vms": [f"not on node '{node.name}': CT {', '.join(map(str, missing))}"]})
        containers = [c for c in containers if c.ctid in wanted]
    denied = [c.ctid for c in containers if not access.can("VM.Migrate", c)]
    if denied:
        deny(
            access,
            "denied VM.Migrate",
            node.path,
            f"permission denied: VM.Migrate on CT {', '.join(map(str, denied))} is required to migrate them",
            address,
        )
    plans = [(c, _checked(access, c, destination, restart, address)) for c in containers]
    return [container_job(access, c, "vzmigrate", params, address) for c, params in plans]
