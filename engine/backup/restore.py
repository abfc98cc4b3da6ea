"""Restore a backup archive as a container: to a new ID, or over a stopped one with ``force``.

The archive's ``./etc/vzdump/pct.conf`` is read and validated before
anything is made; the caller's options override it (``hostname``,
``unprivileged``, ``memory``...; ``storage`` picks where the root disk goes).
The container is made by ``Engine.create`` from the archive itself, so the
storage, the safe extraction and the ownership shift stay in one place;
``etc/vzdump`` is removed from the restored root afterwards, and the
archive's firewall rules become the container's.

Over an existing container the new one is built completely first, under a
temporary ID, while the old one stays as it was; only then is the new root
disk moved beside the old one and the config switched to it in one atomic
write; the old disk is removed last. A failure at any point leaves the old
container untouched and nothing of the new one.

A privileged backup restored as unprivileged is shifted into the id map;
device nodes outside ``/dev`` cannot exist in an unprivileged container and
are left out (those under ``/dev`` are always left to the engine).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.config import ContainerConfig, parse_ctid, write_atomic, write_config
from engine.errors import AlreadyExists, EngineError, InvalidState, ValidationError
from engine.reverter import Reverter
from engine.state import container_lock

from .archive import copy_without_devices, read_archive_config
from .progress import CancelCheck, Progress, check
from .volumes import check_storage, delete_rootfs, move_rootfs

DROPPED_KEYS = ("rootfs", "lock", "parent", "snaptime", "snapstate")
TEMP_ID_BASE = 999_900_000  # temporary IDs of containers being restored over an existing one


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


def _options(archived: ContainerConfig, overrides: dict[str, str], unique: bool, notes: list[str]
             ) -> dict[str, str]:
    """The create options: the archive's config less what belongs to the old disk or host, then the overrides."""
    options: dict[str, str] = {}
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
    if archived.current.raw_values("lxc.idmap"):
        notes.append("lxc.idmap lines of the archive are not restored: the node's id map is used")
    for key, value in overrides.items():
        if key in DROPPED_KEYS:
            raise ValidationError(f"{key}: set by the restore, not by the caller", key=key)
        options[key] = str(value)
    return options


def _check_storage(engine, storage: str | None) -> None:
    if storage is not None:
        check_storage(engine, storage)


def _remove_vzdump_dir(rootfs: Path) -> None:
    """Delete ``etc/vzdump`` inside a restored root, never following a symlink the archive made."""
    fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        try:
            etc = os.open("etc", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        except OSError:  # no etc, or not a directory (a symlink): nothing of ours is there
            return
        try:
            st = os.stat("vzdump", dir_fd=etc, follow_symlinks=False)
        except FileNotFoundError:
            os.close(etc)
            return
        try:
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree("vzdump", dir_fd=etc)
            else:
                os.unlink("vzdump", dir_fd=etc)
        finally:
            os.close(etc)
    finally:
        os.close(fd)


def _write_firewall(engine, ctid: int, text: str | None) -> None:
    from engine.network import container as network

    path = network.firewall_file(engine.layout.root, ctid)
    if text is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, text, mode=0o600)


def _source(archive: Path, archived: ContainerConfig, options: dict[str, str], has_devices: bool,
            result: RestoreResult, stack: contextlib.ExitStack) -> Path:
    """The archive, or a copy without device nodes when a privileged backup becomes unprivileged."""
    target_unprivileged = options.get("unprivileged", "1") != "0"
    if archived.unprivileged or not target_unprivileged or not has_devices:
        return archive
    fd, tmp = tempfile.mkstemp(prefix=".restore-", suffix=".tar.zst", dir=archive.parent)
    stack.callback(os.unlink, tmp)
    with os.fdopen(fd, "wb") as out:
        result.devices_skipped = copy_without_devices(
            archive, out, lambda m: (m.ischr() or m.isblk()) and not m.name.lstrip("./").startswith("dev/"))
    result.notes.append(f"{result.devices_skipped} device nodes of the privileged backup left out "
                        "(an unprivileged container cannot have them)")
    return Path(tmp)


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
    create_options = _options(archived, overrides, unique, notes)
    if storage is not None:
        create_options["storage"] = storage
    has_devices = False
    if not archived.unprivileged and create_options.get("unprivileged", "1") != "0":
        _, _, has_devices = read_archive_config(archive, ctid, scan=True)  # a privileged backup made unprivileged
    result = RestoreResult(ctid, str(archive), create_options.get("hostname", f"CT{ctid}"),
                           create_options.get("unprivileged", "1") != "0", replaced=False, notes=notes)
    check(cancel, "restore")
    with contextlib.ExitStack() as stack:
        source = _source(archive, archived, create_options, has_devices, result, stack)
        if not engine.exists(ctid):
            _restore_new(engine, source, ctid, create_options, firewall_text, progress)
        elif not force:
            raise AlreadyExists(f"container {ctid} already exists; restore over it with force (it must be stopped)")
        else:
            _restore_over(engine, source, ctid, create_options, firewall_text, progress, cancel)
            result.replaced = True
    status = engine.status(ctid, stats=False)
    result.hostname, result.unprivileged = status.hostname, status.unprivileged
    return result


def _restore_new(engine, source: Path, ctid: int, options: dict[str, str], firewall_text: str | None,
                 progress: Progress | None) -> None:
    with Reverter() as revert:
        with _watch_reads(source, progress):
            engine.create(ctid, source, options)
        revert.add(engine.destroy, ctid, True)
        _remove_vzdump_dir(engine._rootfs(engine.config(ctid)))
        _write_firewall(engine, ctid, firewall_text)
        revert.success()


@contextlib.contextmanager
def _watch_reads(source: Path, progress: Progress | None):
    """Report how far this process has read ``source`` (Engine.create takes no progress callback):
    a thread reads the file offset of the open archive from /proc/self/fdinfo a few times a second."""
    if progress is None:
        yield
        return
    total, wanted, stop = source.stat().st_size, str(source.resolve()), threading.Event()

    def watch() -> None:
        fd = None
        while not stop.wait(0.2):
            try:
                if fd is None:
                    fd = next((n for n in os.listdir("/proc/self/fd")
                               if _readlink(f"/proc/self/fd/{n}") == wanted), None)
                if fd is not None:
                    with open(f"/proc/self/fdinfo/{fd}") as info:
                        pos = int(info.readline().split()[1])
                    progress(min(pos, total), total)
            except (OSError, ValueError, IndexError):
                fd = None

    thread = threading.Thread(target=watch, name="restore-progress", daemon=True)
    progress(0, total)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    progress(total, total)


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _free_temp_id(engine) -> int:
    for candidate in range(TEMP_ID_BASE + os.getpid() % 90_000, TEMP_ID_BASE + 99_999):
        if not engine.exists(candidate):
            return candidate
    raise InvalidState("no free temporary container ID for the restore")


def _restore_over(engine, source: Path, ctid: int, options: dict[str, str], firewall_text: str | None,
                  progress: Progress | None, cancel: CancelCheck | None) -> None:
    from engine.network import container as network

    net_options = {k: v for k, v in options.items() if k.startswith("net") and k[3:].isdigit()}
    build_options = {k: v for k, v in options.items() if k not in net_options}
    with container_lock(engine.layout, ctid):
        old = engine.config(ctid)
        if engine._running(ctid):
            raise InvalidState(f"container {ctid} is running; stop it before restoring over it")
        if old.get("protection"):
            raise InvalidState(f"container {ctid} is protected; clear 'protection' first")
        temp = _free_temp_id(engine)
        with Reverter() as revert:
            revert.add(_drop_temp, engine, temp)
            with _watch_reads(source, progress):
                engine.create(temp, source, build_options)
            check(cancel, "restore")
            built = engine.config(temp)
            new_root = engine._rootfs(built)
            _remove_vzdump_dir(new_root)
            # The final config: what the temporary container got, under the real ID, with the network.
            final = ContainerConfig.parse(ctid, built.render(), origin=f"restore of {ctid}")
            for key, value in net_options.items():
                final.set(key, value)
            others = {}
            for other in engine.ids():
                if other not in (ctid, temp):
                    with contextlib.suppress(EngineError):
                        others[other] = engine.config(other)
            if net_options:
                network.configure(engine.layout.root, ctid, final, others)
            # Move the new disk beside the old one under a name of its own, then switch the config.
            volume, path, back = move_rootfs(engine, built, ctid, old)
            revert.add(os.rename, path, back)
            root_props = final.current.values["rootfs"].split(",")[1:]
            final.current.values["rootfs"] = ",".join([volume, *root_props])
            write_config(engine.layout.config_path(ctid), final)  # the switch: old or new, never half
            revert.success()
        # The new container is in place; what follows only tidies up.
        _write_firewall(engine, ctid, firewall_text)
        with contextlib.suppress(EngineError, OSError):
            delete_rootfs(engine, old)
        _drop_temp(engine, temp)


def _drop_temp(engine, temp: int) -> None:
    """Remove the temporary container (its disk has been moved away, or is discarded with it)."""
    with contextlib.suppress(EngineError, OSError):
        engine.destroy(temp, force=True)
    with contextlib.suppress(FileNotFoundError):
        engine.layout.config_path(temp).unlink()
    for path in (engine.layout.console_log(temp), engine.layout.run / "lock" / f"{temp}.lock"):
        path.unlink(missing_ok=True)
