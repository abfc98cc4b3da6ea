"""Adding and removing storages (``storage.cfg``), for the CLI's ``storage add/remove`` and the node's jobs.

A storage is added with its directory made and, for ``btrfs``, checked to lie on btrfs; one still holding
a container's volume (in its config or a snapshot's) is not removed, and the containers are named.
Removing forgets the definition only: the directory and what it holds stay, as with ``pvesm remove``.
(``loop``, raw ext4 images, is the driver a ``dir`` storage uses for a volume with a size.)
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import AlreadyExists, InvalidState, NotFound, ValidationError
from engine.storage import cfg


def add_storage(root: Path, kind: str, storage_id: str, props: dict[str, str]) -> cfg.StorageDef:
    """``props``: ``path`` (absolute), ``content`` (comma list), ``nodes``, ``disable`` ("1")."""
    with cfg.locked(root):
        definitions = cfg.load(root)
        cfg.check_id(storage_id)
        if storage_id in definitions:
            raise AlreadyExists(f"storage '{storage_id}' already exists")
        definition = cfg.make_def(kind, storage_id, props, "storage add")
        taken = {d.path: d.id for d in definitions.values()}
        if definition.path in taken:
            raise ValidationError(f"path {definition.path} is already storage '{taken[definition.path]}'", key="path")
        if definition.path == Path("/") or str(definition.path).startswith(("/proc", "/sys", "/dev")):
            raise ValidationError(f"path {definition.path} cannot hold a storage", key="path")
        definition.path.mkdir(parents=True, exist_ok=True, mode=0o711)
        if kind == "btrfs":
            from engine.storage.btrfs import is_btrfs

            if not is_btrfs(definition.path):
                raise ValidationError(f"path: {definition.path} is not on a btrfs file system", key="path")
        definitions[storage_id] = definition
        cfg.save(root, definitions)
        return definition


def remove_storage(root: Path, storage_id: str, users: list[int]) -> None:
    """Forget the storage; ``users``: the containers with a volume on it (then refused)."""
    with cfg.locked(root):
        definitions = cfg.load(root)
        if storage_id not in definitions:
            raise NotFound(f"storage '{storage_id}' is not defined (known: {', '.join(sorted(definitions))})")
        if users:
            raise InvalidState(
                f"storage '{storage_id}' holds volumes of container{'s' if len(users) > 1 else ''} "
                f"{', '.join(map(str, users))}; destroy or move them first"
            )
        del definitions[storage_id]
        cfg.save(root, definitions)


def volume_users(engine, storage_id: str) -> list[int]:
    """The containers with a volume on the storage, in their config or a snapshot's (an unreadable config counts)."""
    from engine.volumes import volumes_of

    users = []
    for ctid in engine.ids():
        try:
            config = engine.config(ctid)
        except Exception:  # noqa: BLE001 - an unreadable config still counts as a user
            users.append(ctid)
            continue
        for section in [config.current, *config.snapshots.values()]:
            if any(v.volid.partition(":")[0] == storage_id for v in volumes_of(section, storage_only=True)):
                users.append(ctid)
                break
    return users
