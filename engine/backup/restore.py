"""Restore a backup archive as a container: to a new ID, or over a stopped one with ``force``.

The archive's ``./etc/vzdump/pct.conf`` is read and validated before
anything is made; the caller's options override it (``hostname``,
``unprivileged``, ``memory``...; ``storage`` picks where the root disk goes,
with the archive's size and id map kept). The container is made by
``Engine.create`` from the archive itself, so the storage, the safe
extraction and the ownership shift stay in one place; ``etc/vzdump`` is left
out of the restored root, and the archive's firewall rules become the
container's.

Over an existing container ``Engine.create(replace=True)`` builds the new one
completely beside the old one, which stays as it was; only then is the config
switched to the new disk in one atomic write, and the old disks are removed
last. A failure at any point leaves the old container untouched and nothing
of the new one.

A privileged backup restored as unprivileged is shifted into the id map;
device nodes cannot exist in an unprivileged container and are left out as
the archive is extracted (those under ``/dev`` are always left to the engine).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.config import ContainerConfig, parse_ctid, write_atomic
from engine.errors import AlreadyExists, EngineError, InvalidState, ValidationError
from engine.reverter import Reverter
from engine.volumes import render_props

from .archive import CHUNK, VZDUMP_DIR, read_archive_config
from .progress import CancelCheck, Progress, check
from .volumes import check_storage

DROPPED_KEYS = ("rootfs", "lock", "parent", "snaptime", "snapstate")


@dataclass
class RestoreResult:
    ctid: int
    archive: str
    hostname: str
    unprivileged: bool
    replaced: bool
    devices_skipped: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _options(archived: ContainerConfig, overrides: dict[str, str], unique: bool, storage: str | None,
             notes: list[str]) -> dict:
    """The create options: the archive's config less what belongs to the old disk or host, its root disk's
    size and id map, then the overrides."""
    options: dict = {}
    for key, value in archived.current.values.items():
        if key in DROPPED_KEYS:
            continue
        if key.startswith("mp") and key[2:].isdigit():
            props = archived.get(key)
            if not str(props["volume"]).startswith("/"):
                notes.append(f"{key}: its data is restored into the root disk at {props['mp']}; "
                             "the separate volume is not recreated")
                continue
        if unique and key.startswith("net") and key[3:].isdigit():
            value = ",".join(p for p in value.split(",") if not p.startswith("hwaddr="))
        options[key] = value
    if archived.current.description:
        options["description"] = archived.current.description
    if "rootfs" in archived.current.values:
        props = dict(archived.get("rootfs"))
        props.pop("volume", None)
        size = props.pop("size", None)
        gib = repr(int(size) / (1 << 30)) if size else "0"  # exact: a binary fraction
        options["rootfs"] = render_props(f"{storage or 'local'}:{gib}", props)
    elif storage is not None:
        options["storage"] = storage
    idmap = archived.current.raw_values("lxc.idmap")
    if idmap:
        options["lxc.idmap"] = idmap
    for key, value in overrides.items():
        if key in DROPPED_KEYS:
            raise ValidationError(f"{key}: set by the restore, not by the caller", key=key)
        options[key] = str(value)
    return options


def _check_storage(engine, storage: str | None) -> None:
    if storage is not None:
        check_storage(engine, storage)


def _write_firewall(engine, ctid: int, text: str | None) -> None:
    from engine.network import container as network

    path = network.firewall_file(engine.layout.root, ctid)
    if text is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, text, mode=0o600)


def restore(engine, archive: Path | str, ctid: int | str, *, force: bool = False, storage: str | None = None,
            options: dict[str, str] | None = None, unique: bool = False, progress: Progress | None = None,
            cancel: CancelCheck | None = None) -> RestoreResult:
    """Make container ``ctid`` from a backup archive; see the module's docstring for the guarantees."""
    ctid = parse_ctid(ctid)
    archive = Path(archive)
    _check_storage(engine, storage)
    overrides = dict(options or {})
    if engine.exists(ctid):  # checked again under the container's lock
        if not force:
            raise AlreadyExists(f"container {ctid} already exists; restore over it with force (it must be stopped)")
        if engine.status(ctid, stats=False).status == "running":
            raise InvalidState(f"container {ctid} is running; stop it before restoring over it")
    archived, firewall_text, _ = read_archive_config(archive, ctid)
    if firewall_text is not None:
        from engine.network import firewall

        try:
            firewall.parse_rules(firewall_text)
        except (ValueError, EngineError) as err:
            raise ValidationError(f"{archive}: its firewall rules (pct.fw) are invalid: {err}") from None
    notes: list[str] = []
    create_options = _options(archived, overrides, unique, storage, notes)
    unprivileged = create_options.get("unprivileged", "1") != "0"
    result = RestoreResult(ctid, str(archive), create_options.get("hostname", f"CT{ctid}"), unprivileged,
                           replaced=False, notes=notes)
    skip_devices = not archived.unprivileged and unprivileged  # a privileged backup made unprivileged
    if skip_devices:
        _, _, result.devices_skipped = read_archive_config(archive, ctid, scan=True)
        if result.devices_skipped:
            notes.append(f"{result.devices_skipped} device nodes of the privileged backup left out "
                         "(an unprivileged container cannot have them)")
    check(cancel, "restore")
    replace = engine.exists(ctid)
    if replace and not force:
        raise AlreadyExists(f"container {ctid} already exists; restore over it with force (it must be stopped)")
    with Reverter() as revert:
        engine.create(ctid, archive, create_options, progress=_reporter(progress, cancel), replace=replace,
                      skip_devices=skip_devices, exclude=[VZDUMP_DIR])
        if not replace:
            revert.add(engine.destroy, ctid, True)
        _write_firewall(engine, ctid, firewall_text)
        revert.success()
    result.replaced = replace
    status = engine.status(ctid, stats=False)
    result.hostname, result.unprivileged = status.hostname, status.unprivileged
    return result


def _reporter(progress: Progress | None, cancel: CancelCheck | None):
    """The progress callback given to Engine.create: bytes of the archive read, at most one call per MiB;
    a cancel is honoured there, between archive members (the create then undoes itself)."""
    last = [-CHUNK]

    def report(done: int, total: int) -> None:
        check(cancel, "restore")
        if progress is not None and (done - last[0] >= CHUNK or done == total):
            last[0] = done
            progress(done, total)

    return report
