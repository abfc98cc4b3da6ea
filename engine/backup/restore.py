"""Restore a backup archive as a container: to a new ID, or over a stopped one with ``force``.

The archive's ``./etc/vzdump/pct.conf`` is read and validated before
anything is made; the caller's options override it (``hostname``,
``unprivileged``, ``memory``...; ``storage`` picks where the root disk goes,
with the archive's size and id map kept). The container is made by
``Engine.create`` from the archive itself, so the storage, the safe
extraction and the ownership shift stay in one place; ``etc/vzdump`` is left
out of the restored root, and the archive's firewall rules become the
container's. An interface on a bridge this node lacks is restored as it is,
with a warning in the notes; the start then fails naming the bridge.

Over an existing container ``Engine.create(replace=True)`` builds the new one
completely beside the old one, which stays as it was; only then is the config
switched to the new disk in one atomic write, and the old disks are removed
last. A failure at any point leaves the old container untouched and nothing
of the new one.

To a new ID the config is written first with ``lock: create`` and names each
volume as it is allocated; the lock is cleared only when the whole restore
(volumes, firewall) is done. A restore killed mid-way thus leaves a container
that says so: other verbs refuse it, and a restore or create of the ID, or
``unlock``, removes it first.

A privileged backup restored as unprivileged is shifted into the id map;
device nodes cannot exist in an unprivileged container and are left out as
the archive is extracted (those under ``/dev`` are always left to the engine).

The archive's volume mount points (``mpN`` on a storage, archived below their path) become volumes of
their own on the target storage with their size (``mpN: <storage>:<GiB>,mp=/path``): the root disk is
extracted without what lies below their paths, and each volume gets the members below its path through
the same checked extraction. Bind mount points are restored as config only.
"""

from __future__ import annotations

import contextlib
import os
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine import faults
from engine.config import ContainerConfig, parse_ctid, write_atomic
from engine.errors import AlreadyExists, EngineError, InvalidState, ValidationError
from engine.volumes import render_props

from .archive import CHUNK, VZDUMP_DIR, member_name, open_reader, read_archive_config
from .progress import CancelCheck, Progress, check
from .volumes import check_storage

DROPPED_KEYS = ("rootfs", "lock", "parent", "snaptime", "snapstate")
# What an isolated restore (a restore test's throwaway container) leaves out: it must not reach the
# network, start at boot, run the host's hook script, or write into the host's bind-mounted paths.
ISOLATED_KEYS = ("onboot", "startup", "hookscript")


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


def _gib(size) -> str:
    return repr(int(size) / (1 << 30)) if size else "0"  # exact: a binary fraction


def _options(
    archived: ContainerConfig,
    overrides: dict[str, str],
    unique: bool,
    storage: str | None,
    notes: list[str],
    volumes: dict[str, str],
    isolate: bool = False,
) -> dict:
    """The create options: the archive's config less what belongs to the old disk or host, its root disk's
    size and id map, then the overrides."""
    options: dict = {}
    for key, value in archived.current.values.items():
        if key in DROPPED_KEYS:
            continue
        if isolate and (key in ISOLATED_KEYS or (key.startswith("net") and key[3:].isdigit())):
            notes.append(f"{key}: left out (isolated restore)")
            continue
        if key.startswith("mp") and key[2:].isdigit():
            props = archived.get(key)
            if isolate and str(props["volume"]).startswith("/"):
                notes.append(f"{key}: the host's {props['volume']} left out (isolated restore)")
                continue
            if not str(props["volume"]).startswith("/"):  # a volume: a new one of its size on the storage
                extra = {k: v for k, v in props.items() if k not in ("volume", "size")}
                options[key] = render_props(f"{storage or 'local'}:{_gib(props.get('size'))}", extra)
                volumes[key] = str(props["mp"])
                continue
        if unique and key.startswith("net") and key[3:].isdigit():
            value = ",".join(p for p in value.split(",") if not p.startswith("hwaddr="))
        options[key] = value
    if archived.current.description:
        options["description"] = archived.current.description
    if "rootfs" in archived.current.values:
        props = dict(archived.get("rootfs"))
        props.pop("volume", None)
        options["rootfs"] = render_props(f"{storage or 'local'}:{_gib(props.pop('size', None))}", props)
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


def restore(
    engine,
    archive: Path | str,
    ctid: int | str,
    *,
    force: bool = False,
    storage: str | None = None,
    options: dict[str, str] | None = None,
    unique: bool = False,
    isolate: bool = False,
    keep_snapshots: bool = False,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
    known: tuple[ContainerConfig, str | None] | None = None,
) -> RestoreResult:
    """Make container ``ctid`` from a backup archive; see the module's docstring for the guarantees.

    ``known`` (the archive's config and firewall text, known beforehand) spares reading them from the archive,
    which may then be a pipe read once (a migration's stream; no volume mount points then)."""
    ctid = parse_ctid(ctid)
    archive = Path(archive)
    _check_storage(engine, storage)
    overrides = dict(options or {})
    notes: list[str] = []
    if engine.clear_interrupted_create(ctid):
        notes.append(f"removed what an interrupted create or restore of container {ctid} left (lock: create)")
    if engine.exists(ctid):  # checked again under the container's lock
        if not force:
            raise AlreadyExists(f"container {ctid} already exists; restore over it with force (it must be stopped)")
        if engine.status(ctid, stats=False).status == "running":
            raise InvalidState(f"container {ctid} is running; stop it before restoring over it")
    if known is None:
        archived, firewall_text, _ = read_archive_config(archive, ctid)
    else:
        archived, firewall_text = known
    if firewall_text is not None:
        from engine.network import fwconfig

        try:  # the file's syntax; groups, aliases and IP sets it names may be another datacenter's
            fwconfig.parse(firewall_text, "ct")
        except (ValueError, EngineError) as err:
            raise ValidationError(f"{archive}: its firewall rules (pct.fw) are invalid: {err}") from None
    volumes: dict[str, str] = {}  # mount point key -> path inside, for volumes restored apart
    create_options = _options(archived, overrides, unique, storage, notes, volumes, isolate)
    unprivileged = create_options.get("unprivileged", "1") != "0"
    result = RestoreResult(
        ctid, str(archive), create_options.get("hostname", f"CT{ctid}"), unprivileged, replaced=False, notes=notes
    )
    skip_devices = not archived.unprivileged and unprivileged  # a privileged backup made unprivileged
    if skip_devices:
        _, _, result.devices_skipped = read_archive_config(archive, ctid, scan=True)
        if result.devices_skipped:
            notes.append(
                f"{result.devices_skipped} device nodes of the privileged backup left out "
                "(an unprivileged container cannot have them)"
            )
    check(cancel, "restore")
    replace = engine.exists(ctid)
    if replace and not force:
        raise AlreadyExists(f"container {ctid} already exists; restore over it with force (it must be stopped)")
    mount_paths = ["./" + inside.strip("/") for inside in volumes.values() if inside.strip("/")]

    def finish() -> None:  # a new container's lock: create is cleared after it; a failure undoes the create
        for key, inside in volumes.items():
            check(cancel, "restore")
            _fill_volume(engine, ctid, key, archive, inside, skip_devices)
            notes.append(f"{key}: restored as a volume of its own ({engine.config(ctid).current.values[key]})")
        _write_firewall(engine, ctid, firewall_text)

    from engine.network import missing_bridges_allowed

    with missing_bridges_allowed() as missing:  # as Proxmox: restored, and the start names the bridge
        engine.create(
            ctid,
            archive,
            create_options,
            progress=_reporter(progress, cancel),
            replace=replace,
            skip_devices=skip_devices,
            exclude=[VZDUMP_DIR, *mount_paths],
            finish=finish,
            template_fixups=False,
            keep_snapshots=keep_snapshots,
        )
    notes.extend(f"warning: {text}" for text in missing)
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


def _fill_volume(engine, ctid: int, key: str, archive: Path, inside: str, skip_devices: bool) -> None:
    """Extract the archive's members below ``inside`` into the new volume at ``key``.

    They are copied, re-rooted at ``.``, into an uncompressed tar beside the archive, which goes through
    the engine's checked extraction (id shift, unsafe members refused) into a staging directory on the
    volume; its entries then move to the volume's root.
    """
    from engine.unpack import extract_archive

    config = engine.config(ctid)
    _, driver, vol = engine.storages.resolve(str(config.get(key)["volume"]), ctid, key=key)
    prefix = "./" + inside.strip("/")
    fd, part = tempfile.mkstemp(dir=archive.parent, prefix=f".restore-{ctid}-{key}-", suffix=".tar")
    try:
        with (
            os.fdopen(fd, "wb") as out,
            tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as dst,
            open(archive, "rb") as raw,
        ):
            src, _ = open_reader(archive, raw)
            with src:
                for member in src:
                    src.members.clear()
                    name = member_name(member.name)
                    if name != prefix and not name.startswith(prefix + "/"):
                        continue
                    member.name = "." + name[len(prefix) :]
                    if member.islnk():
                        link = member_name(member.linkname)
                        if not link.startswith(prefix + "/"):
                            continue  # a hard link out of the volume cannot be one on its own disk
                        member.linkname = "." + link[len(prefix) :]
                    dst.addfile(member, src.extractfile(member) if member.isreg() else None)
        faults.point("restore:volume")
        with driver.writable_tree(vol) as root:
            staging = Path(root) / f".restore-{key}"
            extract_archive(Path(part), staging, engine._idmap(config), skip_devices=skip_devices)
            try:
                st = os.lstat(staging)
                for entry in os.listdir(staging):
                    os.rename(staging / entry, Path(root) / entry)
                os.chown(root, st.st_uid, st.st_gid)
                os.chmod(root, st.st_mode & 0o7777)
            finally:
                with contextlib.suppress(OSError):
                    os.rmdir(staging)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(part)
