"""Temporary files of killed jobs, found by name and swept once no job can still be writing them.

Recovery (:mod:`engine.recovery`) calls this on every pass, and a destroy for
the container it removed.  A backup's copy (``<dumpdir>/.tmp-<ID>-*``), partial
archive (``.vzdump-lxc-<ID>-*.part``) and a restore's staging tar
(``.restore-<ID>-*.tar``) belong to a container: they go once its flock is free
(the job that wrote them held it for its whole run).  A template build's
``.<name>.<random>.part`` and ``.debian-build-*`` directory belong to no
container: they go when no process has them open (nor as its cwd or root).  A
download's ``.<name>.part`` is kept for a resume, and goes after a day when
its download lock is free.  A migration receiver's spool (``migrate/.in-<ID>-*``) goes once neither its
marker nor its receiver is left; a migration job's one-time key (``<run>/migrate/out-<ID>.pem``) once no job
holds its flock.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

from engine.errors import EngineError
from engine.state import container_busy, flock_held

DOWNLOAD_PARTIAL_AGE = 86400.0  # a download's partial file is kept this long for a resume


def _dump_dirs(engine) -> list[Path]:
    dirs = {engine.layout.root / "dump"}
    with contextlib.suppress(EngineError, OSError):
        for definition in engine.storages.definitions().values():
            dirs.add(Path(definition.path) / "dump")
    return sorted(d for d in dirs if d.is_dir())


def _template_dirs(engine) -> list[Path]:
    dirs = {engine.layout.templates}
    with contextlib.suppress(EngineError, OSError):
        for definition in engine.storages.definitions().values():
            dirs.add(Path(definition.path) / "template" / "cache")
    return sorted(d for d in dirs if d.is_dir())


def _owner(name: str, prefixes: tuple[str, ...]) -> int | None:
    """The container ID in a temporary name such as ``.tmp-<ID>-…``, ``.vzdump-lxc-<ID>-…``."""
    for prefix in prefixes:
        if name.startswith(prefix):
            head = name[len(prefix) :].split("-", 1)[0]
            if head.isdigit():
                return int(head)
    return None


BACKUP_PREFIXES = (".tmp-", ".vzdump-lxc-", ".restore-")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _is_backup_temp(path: Path) -> bool:
    name = path.name
    if name.startswith(".tmp-"):
        return path.is_dir()
    if name.startswith(".vzdump-lxc-"):
        return name.endswith(".part")
    return name.startswith(".restore-") and name.endswith(".tar")


def sweep_backup_files(engine, ctid: int | None, recorded: list[Path] = ()) -> list[str]:
    """Backup copies, partial archives and restore staging files of containers no job holds; ``recorded``
    adds directories a killed backup of ``ctid`` named in its intent (a custom ``--tmpdir``/``--dumpdir``),
    where only that container's temporary names are touched."""
    done = []
    dirs = _dump_dirs(engine)
    if ctid is not None:
        dirs += [d for d in recorded if d.is_absolute() and d.is_dir() and d not in dirs]
    for dumpdir in dirs:
        for path in sorted(dumpdir.glob(".*")):
            owner = _owner(path.name, BACKUP_PREFIXES)
            if owner is None or (ctid is not None and owner != ctid) or not _is_backup_temp(path):
                continue
            if container_busy(engine.layout, owner):
                continue
            _remove(path)
            done.append(f"removed {path}")
    return done


def sweep_files(engine, ctid: int | None = None) -> list[tuple[int | None, str, str]]:
    """Temporary files killed jobs left: a container's (``ctid``, e.g. after destroy) or the node's; what was
    done, as (container ID or None, ``swept`` or ``kept``, what)."""
    actions = [(ctid, "swept", text) for text in sweep_backup_files(engine, ctid)]
    actions += [(ctid, "swept", text) for text in sweep_migration_files(engine, ctid)]
    if ctid is not None:
        return actions
    candidates = []
    now = time.time()
    for directory in _template_dirs(engine):
        for path in directory.glob(".*"):
            name = path.name
            if name.startswith(".debian-build-") and path.is_dir():
                candidates.append(path)
            elif name.endswith(".part") and name.count(".") >= 3 and not _download_partial(path):
                candidates.append(path)  # atomic_file's ``.<name>.<random>.part``
            elif _download_partial(path):
                with contextlib.suppress(OSError):
                    if now - path.stat().st_mtime > DOWNLOAD_PARTIAL_AGE and not _download_locked(path):
                        candidates.append(path)
    if candidates:
        busy = _paths_in_use()
        for path in candidates:
            if any(p == path or path in p.parents for p in busy):
                continue
            if path.name.startswith(".debian-build-"):
                from engine.builders import remove_build_dir

                try:
                    remove_build_dir(path)
                except EngineError as err:
                    actions.append(
                        (None, "kept", f"{path}: a build directory left by an interrupted build was kept: {err}")
                    )
                    continue
            else:
                _remove(path)
            actions.append((None, "swept", f"removed {path}, left by an interrupted template job"))
    return actions


def sweep_migration_files(engine, ctid: int | None) -> list[str]:
    """A receiver's spool ``migrate/.in-<ID>-*`` with no marker left (its migration ended, or its marker
    was already recovered) and no receiver holding its flock."""
    from engine.migrate import incoming_marker, spool_dir
    from engine.migrate.recover import receiver_alive

    directory, done = spool_dir(engine.layout), []
    for path in sorted(directory.glob(".in-*")) if directory.is_dir() else []:
        owner = _owner(path.name, (".in-",))
        if owner is None or (ctid is not None and owner != ctid):
            continue
        if incoming_marker(engine.layout, owner).exists() or receiver_alive(engine, owner):
            continue
        _remove(path)
        done.append(f"removed {path}, left by an interrupted migration")
    outgoing = engine.layout.run / "migrate"  # a killed source job's one-time key (tasks/migrate.py)
    for path in sorted(outgoing.glob("out-*.pem")) if outgoing.is_dir() else []:
        owner = _owner(path.name, ("out-",))
        if owner is None or (ctid is not None and owner != ctid) or not path.exists() or flock_held(path):
            continue
        path.unlink(missing_ok=True)
        done.append(f"removed {path}, left by an interrupted migration")
    return done


def _download_partial(path: Path) -> bool:
    """``.<name>.part`` beside its ``.<name>.lock``: a download's resumable partial file."""
    return path.name.endswith(".part") and (path.parent / (path.name[: -len(".part")] + ".lock")).exists()


def _download_locked(path: Path) -> bool:
    return flock_held(path.parent / (path.name[: -len(".part")] + ".lock"))


def _paths_in_use() -> set[Path]:
    """Every file, cwd and root any process has open: a temporary file a live writer holds is not swept."""
    used: set[Path] = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        base = f"/proc/{pid}"
        links = [f"{base}/cwd", f"{base}/root"]
        with contextlib.suppress(OSError):
            links += [f"{base}/fd/{fd}" for fd in os.listdir(f"{base}/fd")]
        for link in links:
            with contextlib.suppress(OSError):
                target = os.readlink(link)
                if target.startswith("/"):
                    used.add(Path(target.removesuffix(" (deleted)")))
    return used
