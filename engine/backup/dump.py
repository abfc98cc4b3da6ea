"""Back up one container into a dump directory, vzdump-style: modes, atomic archive, log, notes, prune.

Modes, as vzdump's:

- ``stop``: shut the container down cleanly, archive it, start it again if it was running;
- ``suspend``: freeze the container's cgroup for the copy and thaw it afterwards, whatever happens;
- ``snapshot``: archive a storage snapshot while the container runs; only where the container's
  storage offers snapshots (a ``backup_snapshot(config)`` context manager yielding the
  snapshot's root), else refused with a message naming the storage.

A stopped container is archived as it is, whatever the mode. The container's
lock is held for the whole backup, so no start, stop or destroy slips in. The
archive is written under a hidden temporary name, fsynced and renamed only
when complete: a failure, a cancel or a kill leaves no file with the final
name. A watchdog process (``guard``) thaws or restarts the container if the
backup process dies while the container is frozen or stopped. Pruning runs
only after a successful backup, and protected backups are never pruned.
"""
from __future__ import annotations

import contextlib
import errno
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.builders import atomic_file
from engine.cli.output import human_bytes
from engine.config import parse_ctid, write_atomic
from engine.errors import EngineError, HostError, NotFound, ValidationError
from engine.state import container_lock

from . import names
from .archive import OVERFLOW_ID, config_for_archive, write_archive
from .guard import Guard
from .progress import CancelCheck, Progress, check
from .prune import Backup, PruneOptions, prune
from .volumes import snapshot_source, volume_tree

MODES = ("stop", "suspend", "snapshot")


@dataclass
class BackupResult:
    ctid: int
    archive: str
    size: int
    mode: str
    compress: str
    seconds: float
    members: int
    bytes: int
    log: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def default_dumpdir(engine) -> Path:
    """``<root>/dump``, Proxmox's ``/var/lib/vz/dump``."""
    return engine.layout.root / "dump"


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str, level: str = "INFO") -> None:
        self.lines.append(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {level}: {text}")


def check_dumpdir(dumpdir: Path, create: bool) -> Path:
    dumpdir = Path(dumpdir)
    if create:
        dumpdir.mkdir(mode=0o755, parents=True, exist_ok=True)
    if not dumpdir.is_dir():
        raise ValidationError(f"dump directory {dumpdir} does not exist or is not a directory", key="dumpdir")
    return dumpdir


@contextlib.contextmanager
def _mode(engine, ctid: int, mode: str, running: bool, timeout: float, log: _Log) -> Iterator[Path]:
    """The tree to archive, with the container stopped, frozen or snapshotted for as long as it is read."""
    config = engine.config(ctid)
    if not running:
        log(f"container {ctid} is stopped: archiving it as it is")
        yield volume_tree(engine, config.get("rootfs")["volume"], ctid)
        return
    if mode == "snapshot":
        with snapshot_source(engine, config) as root:
            log("archiving a storage snapshot of the running container")
            yield Path(root)
        return
    guard = Guard(engine, ctid, "start" if mode == "stop" else "thaw")
    try:
        if mode == "stop":
            log("stopping the container (clean shutdown)")
            engine._shutdown(ctid, timeout, True)
            try:
                yield engine._rootfs(config)
            finally:
                log("starting the container again")
                engine._start(ctid)
        else:
            log("freezing the container")
            engine.cgroups.freeze(str(ctid))
            try:
                yield engine._rootfs(config)
            finally:
                engine.cgroups.thaw(str(ctid))
                log("container thawed")
    finally:
        guard.disarm()


def _mountpoints(engine, config, log: _Log) -> list[tuple[str, Path]]:
    """Mount points with ``backup=1`` on a storage of this node; the others are named in the log and left out."""
    chosen = []
    for key in sorted(k for k in config.current.values if k.startswith("mp") and k[2:].isdigit()):
        props = config.get(key)
        volume, inside = str(props["volume"]), str(props["mp"])
        if volume.startswith("/"):
            log(f"excluding bind mount point {key} ('{inside}') from backup (not a volume)")
        elif not props.get("backup"):
            log(f"excluding volume mount point {key} ('{inside}') from backup (backup=0)")
        else:
            host = volume_tree(engine, volume, config.ctid, key=key)
            if not host.is_dir():
                raise NotFound(f"{key}: volume {volume} has no directory at {host}")
            log(f"including mount point {key} ('{inside}') in backup")
            chosen.append((inside, host))
    return chosen


def _notes(template: str, ctid: int, hostname: str) -> str:
    return (template.replace("{{guestname}}", hostname).replace("{{vmid}}", str(ctid))
            .replace("{{node}}", socket.gethostname()).replace("{{cluster}}", ""))


def _os_error(err: OSError, dumpdir: Path) -> EngineError:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return HostError(f"dump directory {dumpdir}: no space left on the device; the backup was not written")
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return ValidationError(f"dump directory {dumpdir} is not writable: {err.strerror}", key="dumpdir")
    return HostError(f"dump directory {dumpdir}: {err.strerror or err}")


def backup(engine, ctid: int | str, *, dumpdir: Path | str | None = None, mode: str = "suspend",
           compress: str = "zstd", exclude_paths: Iterable[str] = (), notes: str | None = None,
           protected: bool = False, prune_options: PruneOptions | None = None, threads: int = -1,
           level: int | None = None, shutdown_timeout: float = 60.0, progress: Progress | None = None,
           cancel: CancelCheck | None = None) -> BackupResult:
    """Back up one container; returns where the archive is and what was pruned after it."""
    ctid = parse_ctid(ctid)
    if mode not in MODES:
        raise ValidationError(f"mode '{mode}' is not one of {', '.join(MODES)}", key="mode")
    if compress not in names.COMPRESSIONS:
        raise ValidationError(f"compression '{compress}' is not one of {', '.join(names.COMPRESSIONS)}",
                              key="compress")
    exclude_paths = list(exclude_paths)
    config = engine.config(ctid)  # NotFound for an unknown container
    dumpdir = check_dumpdir(Path(dumpdir) if dumpdir is not None else default_dumpdir(engine), dumpdir is None)
    log = _Log()
    started = time.time()
    log(f"Starting Backup of VM {ctid} (lxc)")
    log(f"CT Name: {config.hostname}")
    log("including mount point rootfs ('/') in backup")
    mountpoints = _mountpoints(engine, config, log)
    if exclude_paths:
        log(f"excluding paths: {', '.join(exclude_paths)}")
    with container_lock(engine.layout, ctid):
        config = engine.config(ctid)
        running = engine._running(ctid) is not None
        log(f"Backup mode: {mode}; container is {'running' if running else 'stopped'}")
        if running and mode == "snapshot":
            snapshot_source(engine, config)  # NotSupported naming the storage, before anything changes
        name, when = names.free_name(dumpdir, ctid, started, compress)
        target = dumpdir / name
        firewall = engine.layout.root / "firewall" / f"{ctid}.fw"
        firewall_text = firewall.read_text() if firewall.is_file() else None
        log(f"creating vzdump archive '{target}'")
        try:
            with atomic_file(target) as fileobj:
                with _mode(engine, ctid, mode, running, shutdown_timeout, log) as root:
                    stats = write_archive(fileobj, root, engine._idmap(config), config_for_archive(config),
                                          firewall_text, compress=compress, threads=threads, level=level,
                                          exclude_paths=exclude_paths, mountpoints=mountpoints,
                                          progress=progress, cancel=cancel)
                check(cancel, "backup")
        except OSError as err:
            raise _os_error(err, dumpdir) from err
    size = target.stat().st_size
    seconds = time.time() - started
    log(f"Total bytes written: {size} ({stats.bytes} bytes of file data in {stats.members} members, "
        f"{stats.excluded} excluded)")
    if stats.unmapped:
        log(f"{stats.unmapped} files owned by host ids outside the container's id map were stored as "
            f"owned by {OVERFLOW_ID}", "WARN")
    log(f"archive file size: {human_bytes(size)}")
    result = BackupResult(ctid, str(target), size, mode, compress, round(seconds, 3), stats.members, stats.bytes)
    try:
        if notes:
            write_atomic(names.notes_path(target), _notes(notes, ctid, config.hostname) + "\n", mode=0o644)
        if protected:
            names.set_protected(target, True)
        if prune_options is not None and prune_options.active():
            result.pruned = prune_dumpdir(dumpdir, prune_options, ctid=ctid)
            for pruned in result.pruned:
                log(f"prune: removed {pruned}")
        log(f"Finished Backup of VM {ctid} ({seconds:.0f} s)")
        write_atomic(names.log_path(target), "\n".join(log.lines) + "\n", mode=0o644)
    except OSError as err:
        raise _os_error(err, dumpdir) from err
    result.log = log.lines
    return result


def prune_dumpdir(dumpdir: Path, options: PruneOptions, ctid: int | None = None, dry_run: bool = False
                  ) -> list[str]:
    """Apply retention to a dump directory (one container's backups, or each container's); the names removed."""
    found = names.list_backups(dumpdir, ctid)
    decisions = prune([Backup(b.time, b.ctid, b.protected, b.name) for b in found], options)
    removed = []
    for decision in decisions:
        if decision.keep:
            continue
        removed.append(decision.backup.name)
        if not dry_run:
            names.remove_backup(Path(dumpdir) / decision.backup.name)
    return removed


def clean_partial(dumpdir: Path, older_than: float = 86400.0) -> list[str]:
    """Remove temporary files that killed backups left (hidden ``.vzdump-*.part``), if old enough."""
    removed = []
    now = time.time()
    for path in Path(dumpdir).glob(".vzdump-*.part"):
        with contextlib.suppress(OSError):
            if now - path.stat().st_mtime > older_than:
                path.unlink()
                removed.append(path.name)
    return removed


__all__ = ["MODES", "BackupResult", "backup", "clean_partial", "default_dumpdir", "prune_dumpdir",
           "snapshot_source"]
