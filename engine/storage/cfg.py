"""``<root>/storage.cfg``: the node's storages, in Proxmox's ``storage.cfg`` syntax.

::

    dir: local
            path /var/lib/caisson
            content rootdir,vztmpl,backup

    btrfs: local-btrfs
            path /mnt/btrfs/caisson
            content rootdir
            nodes node1
            disable

A section starts with ``<type>: <id>`` at the start of a line; its properties
follow, indented, one per line (``disable`` stands alone).  When the file does
not exist the node has one storage, ``local``, a directory storage at the
state root, which is where Caisson has always kept containers
(``images/<ID>/subvol-<ID>-disk-0.subvol``).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.config import STORAGE_ID_RE, write_atomic
from engine.errors import ValidationError
from engine.storage.base import CONTENT_TYPES, StorageDef

TYPES = ("dir", "btrfs", "overlay")
FLAG_KEYS = {"disable", "shared", "mkdir", "is_mountpoint"}  # may stand alone (Proxmox writes "disable")
VALUE_KEYS = {"path", "content", "nodes", "prune-backups", "preallocation", "format", "layout"}
LAYOUTS = ("directory", "overlay")  # a dir storage's new unsized volumes: plain directories, or overlay layers
DEFAULT_CONTENT = frozenset({"rootdir", "vztmpl", "backup"})


def default_storages(root: Path) -> dict[str, StorageDef]:
    return {"local": StorageDef("local", "dir", root, DEFAULT_CONTENT)}


def this_node() -> str:
    import socket

    return socket.gethostname().split(".")[0]


def check_id(value: str) -> str:
    if not STORAGE_ID_RE.match(value or "") or len(value) > 64:
        raise ValidationError(
            f"storage ID '{value}' is invalid: a letter first, then letters, digits, '-', '_' or '.' (at most 64)",
            key="storage",
        )
    return value


def parse_content(value: str, where: str = "content") -> frozenset[str]:
    items = [c.strip() for c in value.split(",") if c.strip()]
    for item in items:
        if item not in CONTENT_TYPES:
            raise ValidationError(
                f"{where}: unknown content type '{item}' (known: {', '.join(CONTENT_TYPES)})", key="content"
            )
    return frozenset(items)


def make_def(kind: str, storage_id: str, props: dict[str, str], where: str) -> StorageDef:
    check_id(storage_id)
    if kind not in TYPES:
        raise ValidationError(
            f"{where}: storage type '{kind}' is not supported (supported: {', '.join(TYPES)})", key="type"
        )
    path = props.get("path")
    if not path or not path.startswith("/") or "\x00" in path or ".." in path.split("/"):
        raise ValidationError(f"{where}: storage '{storage_id}' needs an absolute 'path' without '..'", key="path")
    nodes = tuple(n.strip() for n in props.get("nodes", "").split(",") if n.strip())
    content = parse_content(props["content"], f"{where}: content") if "content" in props else DEFAULT_CONTENT
    if "layout" in props and (kind != "dir" or props["layout"] not in LAYOUTS):
        raise ValidationError(
            f"{where}: storage '{storage_id}': 'layout' is for dir storages, one of {', '.join(LAYOUTS)}",
            key="layout",
        )
    options = {k: v for k, v in props.items() if k not in ("path", "content", "nodes", "disable")}
    return StorageDef(
        storage_id,
        kind,
        Path(os.path.normpath(path)),
        content,
        nodes,
        props.get("disable", "0") not in ("0", ""),
        options,
    )


def parse(text: str, origin: str = "storage.cfg") -> dict[str, StorageDef]:
    result: dict[str, StorageDef] = {}
    current: tuple[str, str, dict[str, str], str] | None = None

    def close() -> None:
        if current is not None:
            kind, sid, props, where = current
            if sid in result:
                raise ValidationError(f"{where}: storage '{sid}' is defined twice", key="storage")
            result[sid] = make_def(kind, sid, props, where)

    for lineno, line in enumerate(text.splitlines(), 1):
        where = f"{origin} line {lineno}"
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            close()
            kind, sep, sid = line.partition(":")
            if not sep:
                raise ValidationError(f"{where}: expected '<type>: <storage ID>', got '{line}'")
            current = (kind.strip(), sid.strip(), {}, where)
            continue
        if current is None:
            raise ValidationError(f"{where}: property outside a storage section")
        key, _, value = line.strip().partition(" ")
        key, value = key.strip(), value.strip()
        if key in FLAG_KEYS:
            current[2][key] = value or "1"
        elif key in VALUE_KEYS:
            if not value:
                raise ValidationError(f"{where}: '{key}' needs a value", key=key)
            current[2][key] = value
        else:
            raise ValidationError(
                f"{where}: unknown storage property '{key}' (known: {', '.join(sorted(FLAG_KEYS | VALUE_KEYS))})",
                key=key,
            )
    close()
    return result


def render(storages: dict[str, StorageDef]) -> str:
    out = []
    for definition in storages.values():
        out.append(f"{definition.type}: {definition.id}")
        out.append(f"\tpath {definition.path}")
        out.append(f"\tcontent {','.join(sorted(definition.content))}")
        if definition.nodes:
            out.append(f"\tnodes {','.join(definition.nodes)}")
        for key, value in sorted(definition.options.items()):
            out.append(f"\t{key} {value}")
        if definition.disabled:
            out.append("\tdisable")
        out.append("")
    return "\n".join(out)


def load(root: Path) -> dict[str, StorageDef]:
    path = root / "storage.cfg"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return default_storages(root)
    return parse(text, str(path))


def save(root: Path, storages: dict[str, StorageDef]) -> None:
    text = render(storages)
    parse(text)  # a file Caisson writes is one it can read
    write_atomic(root / "storage.cfg", text, mode=0o644)


@contextmanager
def locked(root: Path) -> Iterator[None]:
    """The node-wide lock for changes to storage.cfg."""
    fd = os.open(root / ".storage.cfg.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
