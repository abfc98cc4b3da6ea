"""Back up one container into a dump directory, vzdump-style: modes, atomic archive, log, notes, prune.

Modes, as vzdump's:

- ``stop``: shut the container down cleanly, archive it, start it again if it was running;
- ``suspend``: copy the container's volumes into a temporary directory while it runs (first pass),
  freeze its cgroup and copy again only what changed (second pass: new, changed and removed files),
  thaw it whatever happens, and archive the copy while it runs; the copy is removed afterwards, also
  when the backup fails. Image volumes (raw ``.raw`` files) are copied only in the frozen pass: a
  second mount of a live image could read half-written metadata;
- ``snapshot``: freeze the container only while its storage takes a read-only snapshot of every
  volume archived, thaw it, and archive the snapshots while it runs; only where the storage
  offers such snapshots (btrfs, overlay, raw images on a file system that clones files), else
  refused with a message naming the storage.

A stopped container is archived as it is, whatever the mode. The container is
held for the whole backup (``Engine.hold``): its lock is taken and ``lock:
backup`` is written into its config, so no start, stop or destroy slips in,
and ``status`` shows it; the lock goes when the backup ends. The
archive is written under a hidden temporary name, fsynced and renamed only
when complete: a failure, a cancel or a kill leaves no file with the final
name. A watchdog process (``guard``) thaws or restarts the container if the
backup process dies while the container is frozen or stopped. Pruning runs
only after a successful backup, and protected backups are never pruned.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine import faults
from engine.builders import atomic_file
from engine.config import parse_ctid, write_atomic
from engine.errors import EngineError, HostError, NotFound, ValidationError
from engine.state import Intent
from engine.units import human_bytes

from . import names
from .archive import DEFAULT_EXCLUDES, OVERFLOW_ID, Excluder, config_for_archive, write_archive
from .guard import Guard
from .progress import CancelCheck, Progress, check
from .prune import Backup, PruneOptions, prune
from .sync import TreeSync
from .volumes import block_backed, check_storage_volume

MODES = names.MODES


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
    frozen_ms: int | None = None  # how long the container was frozen (suspend mode), in milliseconds

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
def _volume_trees(held, keys: list[str]) -> Iterator[dict[str, Path]]:
    with contextlib.ExitStack() as stack:
        yield {key: stack.enter_context(held.tree(key)) for key in keys}


TMP_PREFIX = ".tmp-"


def tmp_prefix(ctid: int) -> str:
    """The name a suspend-mode copy starts with: ``.tmp-<ID>-``, as vzdump's ``<dumpdir>/<ID>.tmp``."""
    return f"{TMP_PREFIX}{ctid}-"


def remove_leftover_copies(base: Path, ctid: int) -> list[str]:
    """Remove the temporary copies a killed backup of ``ctid`` left in ``base`` (call under its hold)."""
    removed = []
    for path in Path(base).glob(tmp_prefix(ctid) + "*"):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


class _Run:
    """What one backup's mode reports back: the frozen time."""

    def __init__(self) -> None:
        self.frozen_ms: int | None = None


@contextlib.contextmanager
def _two_pass(
    held, keys: list[str], skips: dict, tmpdir: Path, cancel: CancelCheck | None, log: _Log, run: _Run
) -> Iterator[dict[str, Path]]:
    """Suspend mode: the volumes copied while the container runs, again frozen, the copies yielded."""
    copy = Path(tempfile.mkdtemp(prefix=tmp_prefix(held.ctid), dir=tmpdir))
    try:
        syncs = {key: TreeSync(Path("/"), copy / key, skips.get(key), cancel) for key in keys}
        live = [key for key in keys if not block_backed(held.engine, held.config, key)]
        for key in keys:
            if key not in live:
                log(f"{key}: an image volume, copied only while the container is frozen")
        log(f"first pass: copying {', '.join(live) or 'nothing'} to {copy} while the container runs")
        for key in live:
            with held.tree(key) as tree:
                syncs[key].src = str(tree)
                log(f"first pass {key}: {syncs[key].run().describe()}")
        faults.point("backup:first-pass")
        guard = Guard(held.engine, held.ctid, "thaw")
        try:
            log("freezing the container for the second pass")
            started = time.monotonic()
            try:
                with held.suspended(keys), _volume_trees(held, keys) as trees:
                    stats = {}
                    for key in keys:
                        syncs[key].src = str(trees[key])
                        stats[key] = syncs[key].run()
                    faults.point("backup:frozen")
            finally:
                run.frozen_ms = round((time.monotonic() - started) * 1000)
        finally:
            guard.disarm()
        for key in keys:
            log(f"second pass {key}: {stats[key].describe()}")
        log(f"container thawed: frozen for {run.frozen_ms} ms")
        log("archiving the copy while the container runs")
        yield {key: copy / key for key in keys}
    finally:
        shutil.rmtree(copy, ignore_errors=True)


@contextlib.contextmanager
def _mode(
    held,
    mode: str,
    running: bool,
    keys: list[str],
    timeout: float,
    log: _Log,
    *,
    skips: dict | None = None,
    tmpdir: Path | None = None,
    cancel: CancelCheck | None = None,
    run: _Run | None = None,
) -> Iterator[dict[str, Path]]:
    """The trees to archive (by volume key), with the container stopped, frozen or snapshotted while they are
    read, or (suspend mode) copies of them made while it ran and then frozen."""
    if not running:
        log(f"container {held.ctid} is stopped: archiving it as it is")
        with _volume_trees(held, keys) as trees:
            yield trees
        return
    if mode == "snapshot":
        log("taking a storage snapshot (the container is frozen only while it is taken)")
        with held.snapshot_trees(keys) as trees:
            faults.point("backup:snapshot")
            log("archiving the snapshot while the container runs")
            yield trees
        return
    if mode == "suspend":
        with _two_pass(held, keys, skips or {}, tmpdir, cancel, log, run or _Run()) as trees:
            yield trees
        return
    guard = Guard(held.engine, held.ctid, "start")
    try:
        log("stopping the container (clean shutdown)")
        held.shutdown(timeout)
        faults.point("backup:stopped")
        try:
            with _volume_trees(held, keys) as trees:
                yield trees
        finally:
            log("starting the container again")
            held.start()
    finally:
        guard.disarm()


def _mountpoints(config, log: _Log) -> list[tuple[str, str]]:
    """(key, path inside) of mount points with ``backup=1``; the others are named in the log and left out."""
    chosen = []
    for key in sorted(k for k in config.current.values if k.startswith("mp") and k[2:].isdigit()):
        props = config.get(key)
        volume, inside = str(props["volume"]), str(props["mp"])
        if volume.startswith("/"):
            log(f"excluding bind mount point {key} ('{inside}') from backup (not a volume)")
        elif not props.get("backup"):
            log(f"excluding volume mount point {key} ('{inside}') from backup (backup=0)")
        else:
            log(f"including mount point {key} ('{inside}') in backup")
            chosen.append((key, inside))
    return chosen


def _notes(template: str, ctid: int, hostname: str) -> str:
    return (
        template.replace("{{guestname}}", hostname)
        .replace("{{vmid}}", str(ctid))
        .replace("{{node}}", socket.gethostname())
        .replace("{{cluster}}", "")
    )


@contextlib.contextmanager
def _intent(engine, ctid: int, running: bool, dumpdir: Path, tmpdir: Path) -> Iterator[None]:
    """Whether the container ran, for recovery to start it again if a killed stop-mode backup left it down,
    and where its partial archive and temporary copy go, for recovery to remove them (a custom directory
    is not among those it sweeps by itself)."""
    intent = Intent(engine.layout, ctid)
    intent.write(
        {"op": "backup", "running": running, "dumpdir": str(dumpdir.resolve()), "tmpdir": str(tmpdir.resolve())}
    )
    try:
        yield
    finally:
        intent.clear()


def _os_error(err: OSError, dumpdir: Path) -> EngineError:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return HostError(f"dump directory {dumpdir}: no space left on the device; the backup was not written")
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return ValidationError(f"dump directory {dumpdir} is not writable: {err.strerror}", key="dumpdir")
    return HostError(f"dump directory {dumpdir}: {err.strerror or err}")


def backup(
    engine,
    ctid: int | str,
    *,
    dumpdir: Path | str | None = None,
    mode: str = "suspend",
    compress: str = "zstd",
    exclude_paths: Iterable[str] = (),
    notes: str | None = None,
    protected: bool = False,
    prune_options: PruneOptions | None = None,
    threads: int = -1,
    level: int | None = None,
    shutdown_timeout: float = 60.0,
    progress: Progress | None = None,
    cancel: CancelCheck | None = None,
    tmpdir: Path | str | None = None,
) -> BackupResult:
    """Back up one container; returns where the archive is and what was pruned after it.

    ``tmpdir`` is where suspend mode's copy goes (``<tmpdir>/.tmp-<ID>-…``; default the dump directory).
    """
    ctid = parse_ctid(ctid)
    if mode not in MODES:
        raise ValidationError(f"mode '{mode}' is not one of {', '.join(MODES)}", key="mode")
    if compress not in names.COMPRESSIONS:
        raise ValidationError(f"compression '{compress}' is not one of {', '.join(names.COMPRESSIONS)}", key="compress")
    exclude_paths = list(exclude_paths)
    config = engine.config(ctid)  # NotFound for an unknown container
    dumpdir = check_dumpdir(Path(dumpdir) if dumpdir is not None else default_dumpdir(engine), dumpdir is None)
    tmpbase = Path(tmpdir) if tmpdir is not None else dumpdir
    if mode == "suspend" and not tmpbase.is_dir():
        raise ValidationError(f"temporary directory {tmpbase} does not exist or is not a directory", key="tmpdir")
    excluder = Excluder([*DEFAULT_EXCLUDES, *exclude_paths])  # checks the globs before anything changes
    log = _Log()
    started = time.time()
    log(f"Starting Backup of VM {ctid} (lxc)")
    log(f"CT Name: {config.hostname}")
    log("including mount point rootfs ('/') in backup")
    mountpoints = _mountpoints(config, log)
    for key, _ in mountpoints:
        check_storage_volume(engine, config, key)  # on a storage of this node, before anything changes
    if exclude_paths:
        log(f"excluding paths: {', '.join(exclude_paths)}")
    keys = ["rootfs", *(key for key, _ in mountpoints)]
    with engine.hold(ctid, "backup") as held, _intent(engine, ctid, held.running, dumpdir, tmpbase):
        config = held.config
        running = held.running
        faults.point("backup:held")
        log(f"Backup mode: {mode}; container is {'running' if running else 'stopped'}")
        if running and mode == "snapshot":
            held.check_snapshots(keys)  # NotSupported naming the storage, before anything changes
        name, when = names.free_name(dumpdir, ctid, started, compress)
        target = dumpdir / name
        firewall = engine.layout.root / "firewall" / f"{ctid}.fw"
        firewall_text = firewall.read_text() if firewall.is_file() else None
        for leftover in remove_leftover_copies(tmpbase, ctid):
            log(f"removed the temporary copy {leftover} a killed backup left")
        log(f"creating vzdump archive '{target}'")
        run = _Run()
        try:
            with atomic_file(target) as fileobj:
                with _mode(
                    held,
                    mode,
                    running,
                    keys,
                    shutdown_timeout,
                    log,
                    skips={"rootfs": excluder},
                    tmpdir=tmpbase,
                    cancel=cancel,
                    run=run,
                ) as trees:
                    included = []
                    for key, inside in mountpoints:
                        if not trees[key].is_dir():
                            raise NotFound(
                                f"{key}: volume {config.get(key)['volume']} has no directory at {trees[key]}"
                            )
                        included.append((inside, trees[key]))
                    stats = write_archive(
                        fileobj,
                        trees["rootfs"],
                        held.idmap,
                        config_for_archive(config),
                        firewall_text,
                        compress=compress,
                        threads=threads,
                        level=level,
                        exclude_paths=exclude_paths,
                        mountpoints=included,
                        progress=progress,
                        cancel=cancel,
                    )
                    faults.point("backup:archive")
                check(cancel, "backup")
        except OSError as err:
            raise _os_error(err, dumpdir) from err
    size = target.stat().st_size
    seconds = time.time() - started
    log(
        f"Total bytes written: {size} ({stats.bytes} bytes of file data in {stats.members} members, "
        f"{stats.excluded} excluded)"
    )
    if stats.unmapped:
        log(
            f"{stats.unmapped} files owned by host ids outside the container's id map were stored as "
            f"owned by {OVERFLOW_ID}",
            "WARN",
        )
    log(f"archive file size: {human_bytes(size)}")
    result = BackupResult(
        ctid, str(target), size, mode, compress, round(seconds, 3), stats.members, stats.bytes, frozen_ms=run.frozen_ms
    )
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


def prune_dumpdir(dumpdir: Path, options: PruneOptions, ctid: int | None = None, dry_run: bool = False) -> list[str]:
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


__all__ = ["MODES", "BackupResult", "backup", "clean_partial", "default_dumpdir", "prune_dumpdir"]
