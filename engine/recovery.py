"""Recovery after a crash: what a killed job left is finished, undone or named, with nobody's help.

Proxmox leaves a killed job's ``lock:`` for a person to clear; Caisson's node
state is the truth, so it reconciles instead (:func:`recover`, run by the node
agent at start and on its periodic tick, and as ``python -m engine recover``).

Whether the job still runs is never guessed from time or pids: every operation
holds the container's ``flock`` (``run/lock/<ID>.lock``) for its whole run,
and the kernel drops it when the holder dies, so a persisted lock whose flock
is free was left by a dead process (:func:`engine.state.container_busy`).  A
container whose flock is held is left alone.

First, operations a storage driver left half done inside a storage are finished or undone
(``Driver.repair``: an overlay volume's snapshot or rollback, :mod:`engine.storage.overlay_repair`).

Per lock (see ``docs/architecture.md``, Recovery):

- ``create`` (a create, restore or clone target): the half-made container is removed;
- ``snapshot``: the snapshot that never finished is removed with its partial data;
- ``snapshot-delete``: the delete is finished;
- ``rollback``: finished to the snapshot the rollback recorded (:class:`engine.state.Intent`), and the
  container started if it ran; without that record it is kept, naming why;
- ``backup``: its storage snapshots, temporary copy and partial archive are removed (in the dump and
  temporary directories the backup recorded, a custom ``--tmpdir`` or ``--dumpdir`` too), the container
  thawed, and started again if a stop-mode backup left it down;
- ``migrate``: on the source, released (and started again in restart mode) unless the kill came while
  committing; on the target, the uncommitted copy removed (:mod:`engine.migrate.recover`);
- any other lock (``mounted``, ``disk``, ... set by hand or by Proxmox) is kept for a person.

Then, for every container no job holds: a resize killed after its volume grew has the config take the
volume's real size; a frozen cgroup is thawed (Caisson has no
suspend: only a killed job leaves one frozen), a half-started or exited
container's cgroup, network and run record are cleaned up, and volumes left
for an ID without a config (a killed clone) are removed.  Temporary files are
swept: backups' ``.tmp-<ID>-*`` copies and ``.vzdump-lxc-<ID>-*.part`` archives,
restores' ``.restore-<ID>-*.tar``, template builds' ``.<name>.*.part`` files and
``.debian-build-*`` directories no process has open, and download partials
(kept for resume) after a day.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.errors import EngineError, NotFound
from engine.state import Intent, container_busy, container_lock

log = logging.getLogger(__name__)


@dataclass
class Action:
    """One thing recovery did or refused: ``what`` is released, completed, removed, kept, thawed, cleaned,
    swept or failed."""

    ctid: int | None
    what: str
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return self.detail


def recover(engine, ctid: int | None = None, full: bool = True) -> list[Action]:
    """Reconcile the node (or one container) after a crash; the list says what was done and what was kept.

    ``full`` (at the agent's start, from the command line) also puts every running container's limits back
    to its config and thaws its image volumes' file systems (a killed ``set`` or backup may have left
    either); the periodic tick leaves that out, touching only what a lock, a frozen cgroup or a left run
    record points at.
    """
    from engine.migrate import recover as migration

    actions = [Action(*done) for done in migration.incoming(engine, ctid)]  # before: it removes containers
    ids = [ctid] if ctid is not None else engine.node.ids()
    actions += _repair_storages(engine)  # before any lock's release, which may delete snapshots
    for ident in ids:
        if container_busy(engine.layout, ident) or migration.is_incoming(engine, ident):
            continue  # a live receiver's uncommitted copy (a dead one's went above)
        try:
            actions += _recover_container(engine, ident, full)
        except NotFound:
            continue  # destroyed meanwhile
        except EngineError as err:  # one container's trouble must not stop the others'
            actions.append(Action(ident, "failed", f"container {ident}: recovery failed: {err}"))
    if ctid is None:
        actions += _orphan_volumes(engine)
    actions += sweep(engine, ctid)
    for action in actions:
        log.warning("recovery: %s", action.detail)
    return actions


def _repair_storages(engine) -> list[Action]:
    """Volume operations a killed process left half done inside a storage (an overlay volume's snapshot or
    rollback between its renames and its records): finished or undone, before anything reads the volume."""
    from engine.storage import make_storage

    actions = []
    for sid, definition in engine.storages.definitions().items():
        for driver in make_storage(definition).drivers():
            if not hasattr(driver, "repair"):
                continue
            try:
                done = driver.repair()
            except (OSError, EngineError) as err:
                actions.append(Action(None, "failed", f"storage '{sid}': repair of its volumes failed: {err}"))
                continue
            actions += [Action(ident, "completed", f"storage '{sid}': {detail}") for ident, detail in done]
    return actions


# ---- one container ---------------------------------------------------------------------------------
def _recover_container(engine, ctid: int, full: bool) -> list[Action]:
    lock = engine.config(ctid).current.values.get("lock")  # read once: the tick runs this for every container
    actions = [_release(engine, ctid, lock)] if lock else []
    if not lock or (engine.exists(ctid) and not engine.config(ctid).current.values.get("lock")):
        actions += _settle(engine, ctid)
        if full and engine.node.running(ctid) is not None:
            from engine.config_changes import limits_of

            engine.cgroups.apply(str(ctid), limits_of(engine.config(ctid)))
            if thaw_filesystems(engine, ctid):
                actions.append(Action(ctid, "thawed", f"container {ctid}: its file systems were left frozen; thawed"))
        if full:
            actions += _adopt_volumes(engine, ctid)
    return actions


def _adopt_volumes(engine, ctid: int) -> list[Action]:
    """Volumes of the container that its config does not name (a ``set`` of a mount point killed before its
    config was written): added as ``unusedN``, as Proxmox's rescan does, so a person sees and removes them
    (a volume is never deleted on a guess)."""
    from engine.config import MAX_UNUSED, write_config
    from engine.storage import make_storage

    actions = []
    with container_lock(engine.layout, ctid, timeout=0):
        config = engine.config(ctid)
        text = config.render()
        for sid, definition in engine.storages.definitions().items():
            images = Path(definition.path) / "images" / str(ctid)
            if not images.is_dir():
                continue
            drivers = make_storage(definition).drivers()
            for entry in sorted(images.iterdir()):
                vol = f"{ctid}/{entry.name}"
                volid = f"{sid}:{vol}"
                if entry.name.startswith(".") or "@" in entry.name or volid in text:
                    continue
                if not any(driver.owns(vol) for driver in drivers):
                    continue
                free = next(n for n in range(MAX_UNUSED) if f"unused{n}" not in config.current.values)
                config.current.values[f"unused{free}"] = volid
                text = config.render()
                actions.append(
                    Action(
                        ctid,
                        "kept",
                        f"container {ctid}: volume {volid} was named by no config (an interrupted "
                        f"set of a mount point); kept as unused{free}: attach it or delete it",
                    )
                )
        if actions:
            write_config(engine.layout.config_path(ctid), config)
    return actions


def thaw_filesystems(engine, ctid: int) -> bool:
    """FITHAW on the running container's image volumes (a killed backup's FIFREEZE outlives it); True if
    one was frozen."""
    from engine.storage import mountns
    from engine.volumes import open_root, open_volume, volumes_of

    record = engine.node.running(ctid)
    if record is None:
        return False
    thawed = False
    root_fd = open_root(record.pid)
    try:
        for volume in volumes_of(engine.config(ctid).current, storage_only=True):
            _, driver, _ = engine.storages.resolve(volume.volid, ctid, key=volume.key)
            if not driver.info.block_backed:
                continue
            fd = open_volume(root_fd, volume)
            try:
                thawed |= mountns.thaw_fs(fd)
            finally:
                os.close(fd)
    finally:
        os.close(root_fd)
    return thawed


def _release(engine, ctid: int, lock: str) -> Action:
    intent = Intent(engine.layout, ctid)
    facts = intent.read() or {}
    if lock == "create":
        engine.unlock(ctid)
        return Action(
            ctid,
            "removed",
            f"container {ctid}: a create, restore or clone into it was interrupted "
            "(lock: create); removed what it made",
        )
    if lock == "snapshot":
        dropped = engine.unlock(ctid)
        names = ", ".join(dropped) or "none was recorded yet"
        return Action(
            ctid,
            "released",
            f"container {ctid}: a snapshot was interrupted (lock: snapshot); "
            f"removed the unfinished snapshot ({names}) and its data",
        )
    if lock == "snapshot-delete":
        config = engine.config(ctid)
        pending = [n for n, s in config.snapshots.items() if s.values.get("snapstate") == "delete"]
        for name in pending:
            engine.delete_snapshot(ctid, name, force=True)
        if not pending:
            engine.unlock(ctid)
        return Action(
            ctid,
            "completed",
            f"container {ctid}: a snapshot delete was interrupted "
            f"(lock: snapshot-delete); finished deleting {', '.join(pending) or 'nothing left to delete'}",
        )
    if lock == "backup":
        engine.unlock(ctid)  # its storage snapshots go too
        from engine.sweep import sweep_backup_files

        recorded = [Path(p) for key in ("tmpdir", "dumpdir") if isinstance(p := facts.get(key), str)]
        done = ["lock cleared", *(sweep_backup_files(engine, ctid, recorded))]
        if thaw_filesystems(engine, ctid):
            done.append("file systems thawed")
        if engine.cgroups.frozen(str(ctid)):
            engine.cgroups.thaw(str(ctid))
            done.append("container thawed")
        if facts.get("op") == "backup" and facts.get("running") and engine.node.running(ctid) is None:
            _start(engine, ctid)
            done.append("started again, as it ran before the backup")
        intent.clear()
        return Action(
            ctid, "released", f"container {ctid}: a backup was interrupted (lock: backup); " + "; ".join(done)
        )
    if lock == "migrate" and facts.get("op") == "migrate":
        from engine.migrate.recover import release_outgoing

        return Action(ctid, *release_outgoing(engine, ctid, facts))
    if lock == "rollback" and facts.get("op") == "rollback" and facts.get("snapshot"):
        return _finish_rollback(engine, ctid, intent, facts)
    if lock == "rollback":
        reason = (
            "its volumes may be partly rolled back and the snapshot it went to is not recorded: "
            f"roll back again to the snapshot you chose, or 'python -m engine unlock {ctid}' to keep them"
        )
    else:
        reason = f"'{lock}' is not a lock Caisson's jobs set; check the container, then unlock it"
    return Action(ctid, "kept", f"container {ctid}: lock '{lock}' kept: {reason}")


def _finish_rollback(engine, ctid: int, intent: Intent, facts: dict) -> Action:
    """Run the rollback again from its start: rolling a volume back to its snapshot twice is the same."""
    name, running = str(facts["snapshot"]), bool(facts.get("running"))
    from engine.config import write_config

    with container_lock(engine.layout, ctid):
        config = engine.config(ctid)
        config.current.values.pop("lock", None)
        write_config(engine.layout.config_path(ctid), config)
    try:
        engine.rollback(ctid, name, start=running)
    except EngineError as err:
        with container_lock(engine.layout, ctid):
            config = engine.config(ctid)
            config.current.values["lock"] = "rollback"
            write_config(engine.layout.config_path(ctid), config)
        intent.clear()
        return Action(
            ctid,
            "kept",
            f"container {ctid}: an interrupted rollback to '{name}' could not be "
            f"finished ({err}); lock 'rollback' kept: check it, roll back again or unlock it",
        )
    intent.clear()
    started = "; started again" if running else ""
    return Action(ctid, "completed", f"container {ctid}: an interrupted rollback to '{name}' was finished{started}")


def _settle(engine, ctid: int) -> list[Action]:
    """An unlocked container no job holds: not frozen, and cleaned up if its init is gone."""
    name = str(ctid)
    actions = []
    if engine.cgroups.frozen(name):
        thaw_filesystems(engine, ctid)
        engine.cgroups.thaw(name)
        actions.append(Action(ctid, "thawed", f"container {ctid}: was left frozen by an interrupted job; thawed"))
    if engine.node.running(ctid) is None and (engine.cgroups.exists(name) or engine.layout.run_record(ctid).exists()):
        from engine.power import hard_stop

        with container_lock(engine.layout, ctid):
            hard_stop(engine.node, ctid)
        actions.append(
            Action(
                ctid,
                "cleaned",
                f"container {ctid}: its init is gone (an interrupted start, or "
                "it stopped by itself); removed its cgroup, network and run record",
            )
        )
    intent = Intent(engine.layout, ctid)
    facts = intent.read()
    if facts and facts.get("op") == "resize":
        actions += _finish_resize(engine, ctid, str(facts.get("disk")))
    if facts and facts.get("running") and engine.node.running(ctid) is None:
        # a rollback (or stop-mode backup) killed after it stopped the container and before its lock
        _start(engine, ctid)
        actions.append(
            Action(
                ctid,
                "started",
                f"container {ctid}: an interrupted {facts.get('op')} had stopped it before changing anything; "
                "started again",
            )
        )
    intent.clear()
    return actions


def _finish_resize(engine, ctid: int, disk: str) -> list[Action]:
    """A resize killed between growing the volume and writing the config: the config takes the real size."""
    corrected = engine.correct_size(ctid, disk)
    if corrected is None:
        return []
    old, new = corrected
    return [
        Action(
            ctid,
            "completed",
            f"container {ctid}: a resize of {disk} was interrupted after the volume grew; "
            f"its config said {old} bytes, now the volume's real {new}",
        )
    ]


def _start(engine, ctid: int) -> None:
    """Start the container unless something (a backup's guard) already did."""
    from engine.errors import InvalidState

    try:
        engine.start(ctid)
    except InvalidState:
        if engine.node.running(ctid) is None:
            raise


def _orphan_volumes(engine) -> list[Action]:
    """Volumes on the storages for an ID that has no config (a killed clone's target): removed."""
    from engine.allocation import free_leftovers

    actions = []
    found: set[int] = set()
    for definition in engine.storages.definitions().values():
        images = Path(definition.path) / "images"
        with contextlib.suppress(OSError):
            found |= {int(p.name) for p in images.iterdir() if p.name.isdigit() and p.is_dir()}
    for ident in sorted(found):
        if engine.exists(ident) or container_busy(engine.layout, ident):
            continue
        with container_lock(engine.layout, ident, timeout=0):
            if engine.exists(ident):
                continue
            free_leftovers(engine.node, ident)
        actions.append(
            Action(
                ident,
                "removed",
                f"container {ident}: volumes without a config (an interrupted clone or create) removed",
            )
        )
    return actions


def sweep(engine, ctid: int | None = None) -> list[Action]:
    """Temporary files of killed jobs (:mod:`engine.sweep`): the node's, or one container's (after destroy)."""
    from engine.sweep import sweep_files

    return [Action(*done) for done in sweep_files(engine, ctid)]
