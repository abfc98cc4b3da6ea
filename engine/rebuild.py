"""Rebuild a stopped container on a template: a new root file system from the template, its settings kept.

The container keeps its ID, config (hostname, resources, network, id map,
bind mounts of host paths) and root disk's storage and size; its root file
system is made anew from ``template`` by the create's own steps (a replace,
with the template's distribution fix-ups), so root's password and SSH keys
are the template's.  ``ostype`` is detected again.  Volumes of its own
besides the root disk (``mpN`` on a storage) would be made empty, so such a
container is refused, naming them.  With ``keep_snapshots`` (the job's
default, after its safety snapshot) the old root and the snapshots stay, and
a rollback brings the container back as it was.
"""

from __future__ import annotations

from engine.config import parse_size
from engine.errors import InvalidState
from engine.volumes import render_props, volumes_of

DROPPED = ("rootfs", "lock", "parent", "ostype", "snaptime", "snapstate")


def rebuild_options(config) -> dict:
    """The create options that rebuild ``config``'s container with its settings; refused with volumes of its own."""
    own = [v.key for v in volumes_of(config.current, storage_only=True) if v.key != "rootfs"]
    if own:
        raise InvalidState(
            f"container {config.ctid} has volumes of its own besides its root disk ({', '.join(own)}): a rebuild "
            "makes the root file system only; move their data out and remove them first"
        )
    options = {
        k: v for k, v in config.current.values.items() if k not in DROPPED and not k.startswith(("unused", "lxc."))
    }
    props = dict(config.get("rootfs"))
    storage = str(props.pop("volume")).split(":", 1)[0]
    size = props.pop("size", None)
    if isinstance(size, str):
        size = parse_size(size, "rootfs")
    gib = repr(int(size) / (1 << 30)) if size else "0"  # exact: a binary fraction, as a restore writes it
    options["rootfs"] = render_props(f"{storage}:{gib}", props)
    idmap = config.current.raw_values("lxc.idmap")
    if idmap:
        options["lxc.idmap"] = idmap
    if config.current.description:
        options["description"] = config.current.description
    return options


def rebuild(engine, ctid: int, template: str, keep_snapshots: bool = True) -> None:
    """Rebuild stopped container ``ctid`` on ``template`` (a path or ``local:vztmpl/<name>``)."""
    if engine.status(ctid, stats=False).status == "running":
        raise InvalidState(f"container {ctid} is running; stop it before rebuilding it")
    options = rebuild_options(engine.config(ctid))
    engine.create(ctid, template, options, replace=True, keep_snapshots=keep_snapshots)
