"""Privileges, built-in roles and access paths, in Proxmox's spirit.

Paths: ``/`` (the datacenter), ``/nodes/<name>``, ``/ct/<id>``,
``/pool/<name>``, ``/storage/<name>``.  A container inherits what is granted
on ``/``, on its node, and on its pool; what is granted on a more specific
path replaces what came from above (so ``NoAccess`` on ``/ct/100`` revokes).
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError

PRIVILEGES = {
    "Sys.Audit": "see nodes, tasks of others and the datacenter's state",
    "Sys.Modify": "change node and datacenter settings (template sources, bridges)",
    "Sys.Console": "open a node's shell",
    "Permissions.Modify": "grant and revoke access, manage users and tokens",
    "VM.Audit": "see a container, its config and its tasks",
    "VM.PowerMgmt": "start, stop, shut down and reboot",
    "VM.Console": "open the container's console",
    "VM.Config": "change limits, network and options",
    "VM.Config.Network": "set a NIC outside its allocation: firewall off, its own MAC, a static address outside "
    "the bridge's pool or subnet",
    "VM.Allocate": "create and destroy containers",
    "VM.Snapshot": "take, roll back and delete snapshots",
    "VM.Backup": "back up and restore",
    "VM.Clone": "clone a container",
    "VM.Migrate": "migrate a container to another node",
    "Datastore.Audit": "see a storage and its content",
    "Datastore.AllocateSpace": "put container volumes on a storage",
    "Datastore.AllocateTemplate": "download, build and remove templates",
    "Pool.Audit": "see a pool",
    "Pool.Allocate": "create pools and move containers between them",
}

BUILTIN_ROLES = {
    "Administrator": sorted(PRIVILEGES),
    "Operator": ["VM.Audit", "VM.PowerMgmt", "VM.Console", "Datastore.Audit", "Pool.Audit"],
    "Auditor": ["Sys.Audit", "VM.Audit", "Datastore.Audit", "Pool.Audit"],
    "ContainerAdmin": [
        "VM.Audit",
        "VM.PowerMgmt",
        "VM.Console",
        "VM.Config",
        "VM.Allocate",
        "VM.Snapshot",
        "VM.Backup",
        "VM.Clone",
        "VM.Migrate",
        "Datastore.Audit",
        "Datastore.AllocateSpace",
        "Pool.Audit",
    ],
    "NoAccess": [],
}

_PATH = re.compile(r"^/$|^/(nodes|pool|storage)/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$|^/ct/[1-9][0-9]{2,8}$")


def validate_path(value: str) -> None:
    if not _PATH.match(value or ""):
        raise ValidationError(
            f"'{value}' is not an access path (use /, /nodes/<name>, /ct/<id>, /pool/<name> or /storage/<name>)"
        )


def container_paths(ctid: int, node: str | None, pool: str | None) -> list[list[str]]:
    """The levels a container's privileges are resolved through, least specific first."""
    middle = [p for p in (f"/nodes/{node}" if node else None, f"/pool/{pool}" if pool else None) if p]
    return [["/"], middle, [f"/ct/{ctid}"]]


def object_paths(path: str) -> list[list[str]]:
    """The levels for anything that is not a container: the datacenter, then the object itself."""
    return [["/"]] if path == "/" else [["/"], [path]]
