"""Backup jobs on one container or one archive: back up, restore, verify, delete, protect.

Each job names its container in ``target`` (``/ct/<ID>`` jobs are serialised
per container by ``JobTask``), and its archive by ``storage`` and ``archive``
(the file name) in ``params``.  Archives live in the ``dump`` directory of a
storage that holds ``backup`` content (``local``: ``<root>/dump``).  A backup
job records its outcome under ``params["result"]`` (archive, size, seconds,
pruned), which a backup job run reads for its summary mail.

The web tier never reads a node's disk: ``tasks.mirror.sync_backups``
mirrors every dump directory into ``BackupArchive`` rows, after each job and
on the agent's tick (only a directory whose modification time changed is
listed again).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from engine.errors import NotFound, NotSupported, ValidationError
from tasks.base import JobContext, JobTask
from tasks.celery import app
from tasks.containers import refuse_nic_settings, refuse_root_settings
from tasks.mirror import sync_backups, sync_container
from tasks.runtime import node_engine, this_node
from webui.live import publish
from webui.models import BackupSchedule, Container, Job

log = logging.getLogger(__name__)
FULL_RESYNC_AFTER = 300.0  # seconds: list every dump directory again even if its mtime did not change
_listed: dict[tuple[str, str], tuple[int, float]] = {}  # (node, storage) -> (dir mtime_ns, when listed)


# ---- where archives are ----------------------------------------------------------------------
def dumpdir_of(storage: str) -> Path:
    """The dump directory of a storage holding backups on this node (made if missing, as vzdump does)."""
    definition = node_engine().storages.get(storage, content="backup", key="storage").definition
    path = Path(definition.path) / "dump"
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    return path


def archive_path(storage: str, name: str) -> Path:
    from engine.backup.names import ARCHIVE_RE

    if not isinstance(name, str) or not ARCHIVE_RE.match(name):
        raise ValidationError(f"'{name}' is not a vzdump archive name", key="archive")
    path = dumpdir_of(storage) / name
    if not path.is_file():
        raise NotFound(f"backup {storage}:backup/{name} does not exist on this node")
    return path


# ---- jobs ------------------------------------------------------------------------------------
class BackupJob(JobTask):
    """A job on a container's backups: mirrors the container and the archives back afterwards."""

    abstract = True

    def ctid(self, ctx: JobContext) -> int:
        return int(ctx.job.target)

    def storage(self, ctx: JobContext) -> str:
        return ctx.params.get("storage") or "local"

    def after(self, ctx: JobContext) -> None:
        node = this_node()
        sync_container(node, self.ctid(ctx))
        sync_backups(node, force=True)


def _bytes_progress(ctx: JobContext, verb: str):
    from engine.units import human_bytes

    def report(done: int, total: int) -> None:
        ctx.progress(done, total, f"{verb} {human_bytes(done)} of {human_bytes(total)}")

    return report


class _Cancel:
    """The engine's cancel check: this job's flag, or the flag of the backup job run it is part of."""

    def __init__(self, ctx: JobContext):
        self.ctx, self.parent, self.checked = ctx, ctx.params.get("parent"), 0.0

    def __call__(self) -> bool:
        now = time.monotonic()
        if self.parent and now - self.checked >= 0.5:
            self.checked = now
            if Job.objects.filter(pk=self.parent, cancel_requested=True).exists():
                self.ctx.cancel_event.set()
        return self.ctx.cancel_event.is_set()


def clean_partials(dumpdir: Path, ctid: int) -> list[str]:
    """Temporary files of killed backups: this container's at once (under its lock), others' after a day."""
    from engine.backup.dump import clean_partial
    from engine.state import container_lock

    removed = clean_partial(dumpdir)
    with container_lock(node_engine().layout, ctid):  # a backup writing one holds this lock for its whole run
        for path in dumpdir.glob(f".vzdump-lxc-{ctid}-*.part"):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


class Vzdump(BackupJob):
    """``params``: ``storage``, ``mode``, ``compress``, ``exclude`` (paths), ``notes``, ``protected``,
    ``prune`` (keep-* of a backup job run, applied after this backup succeeded), ``parent`` (the run)."""

    name = "caisson.backup.vzdump"

    def perform(self, ctx: JobContext) -> str:
        from engine.backup import PruneOptions
        from engine.backup.dump import backup
        from engine.units import human_bytes

        ctid, params = self.ctid(ctx), ctx.params
        dumpdir = dumpdir_of(self.storage(ctx))
        for name in clean_partials(dumpdir, ctid):
            ctx.log(f"removed {name}, left by an interrupted backup")
        prune = PruneOptions(**params["prune"]) if params.get("prune") else None
        ctx.progress(0, None, "backing up", force=True)
        mode = params.get("mode", "snapshot")
        kwargs = {
            "dumpdir": dumpdir,
            "compress": params.get("compress", "zstd"),
            "exclude_paths": params.get("exclude") or [],
            "notes": params.get("notes") or None,
            "protected": bool(params.get("protected")),
            "prune_options": prune,
            "progress": _bytes_progress(ctx, "archived"),
            "cancel": _Cancel(ctx),
        }
        try:
            result = backup(node_engine(), ctid, mode=mode, **kwargs)
        except NotSupported as exc:
            if mode != "snapshot":
                raise
            # vzdump's own fallback: refused before anything changed, so suspend mode can run instead.
            ctx.log(f"snapshot mode not possible ({exc}); falling back to suspend mode")
            result = backup(node_engine(), ctid, mode="suspend", **kwargs)
        for line in result.log:
            ctx.log(line)
        outcome = {
            "archive": Path(result.archive).name,
            "storage": self.storage(ctx),
            "size": result.size,
            "seconds": result.seconds,
            "pruned": result.pruned,
        }
        ctx.job.params = {**params, "result": outcome}
        Job.objects.filter(pk=ctx.job.pk).update(params=ctx.job.params)
        return f"{outcome['archive']} ({human_bytes(result.size)})"


class Vzrestore(BackupJob):
    """``params``: ``storage`` and ``archive`` (where the backup is), ``rootfs_storage``, ``force``, ``unique``,
    ``options`` (pct keys overriding the archive's, e.g. hostname)."""

    name = "caisson.backup.restore"

    def perform(self, ctx: JobContext) -> str:
        from engine.backup.restore import restore

        params = ctx.params
        archive = archive_path(self.storage(ctx), params.get("archive"))
        self.check_rights(ctx, archive)
        ctx.log(
            f"restoring {archive.name} as CT {self.ctid(ctx)}"
            + (" over the existing one" if params.get("force") else "")
        )
        ctx.progress(0, None, "restoring", force=True)
        safety = None
        if params.get("force") and node_engine().exists(self.ctid(ctx)):
            from tasks.safety import before_risky

            # The container as it was stays reachable: its snapshots (this one included) and old volumes
            # are kept by the restore, so the task page's one click rolls the restore back.
            safety = before_risky(ctx, self.ctid(ctx), "restore")
        result = restore(
            node_engine(),
            archive,
            self.ctid(ctx),
            force=bool(params.get("force")),
            keep_snapshots=safety is not None,
            storage=params.get("rootfs_storage") or None,
            options=params.get("options") or {},
            unique=bool(params.get("unique")),
            progress=_bytes_progress(ctx, "read"),
            cancel=ctx.cancel_event,
        )
        for note in result.notes:
            ctx.log(note)
        if safety is not None:
            ctx.log(
                f"the container as it was is snapshot '{safety}'; its old volumes stay as unused volumes until "
                "they are removed (after a rollback, the restored ones do)"
            )
        return f"restored CT {result.ctid} ({result.hostname})"

    def check_rights(self, ctx: JobContext, archive: Path) -> None:
        """The archive's own config against what the user may set (the web tier cannot read it): over an
        existing container what differs from its config, to a new ID all of it; its NICs by the same rules."""
        from engine.backup.archive import read_archive_config
        from engine.root_settings import root_equivalent_changes

        archived, _, _ = read_archive_config(archive, self.ctid(ctx))
        for key, value in (ctx.params.get("options") or {}).items():
            archived.set(key, str(value))
        ctid = self.ctid(ctx)
        before = node_engine().config(ctid).current if ctx.params.get("force") and node_engine().exists(ctid) else None
        refuse_root_settings(ctx, root_equivalent_changes(before, archived.current), f"backup {archive.name}")
        refuse_nic_settings(
            ctx,
            ctid,
            archived.current.values,
            f"backup {archive.name}",
            old=before.values if before is not None else None,
            new_mac=bool(ctx.params.get("unique")),
        )

    def after(self, ctx: JobContext) -> None:
        ctid = self.ctid(ctx)
        if sync_container(this_node(), ctid) is None:  # failed restore to a new ID: drop the placeholder
            if Container.objects.filter(ctid=ctid, status=Container.Status.CREATING).delete()[0]:
                BackupSchedule.forget_container(ctid)
                publish([f"/ct/{ctid}"], {"type": "ct.removed", "ctid": ctid})


class Vzverify(BackupJob):
    name = "caisson.backup.verify"

    def perform(self, ctx: JobContext) -> str:
        from engine.backup.verify import verify

        archive = archive_path(self.storage(ctx), ctx.params.get("archive"))
        result = verify(archive, progress=_bytes_progress(ctx, "read"), cancel=ctx.cancel_event)
        ctx.log(
            f"{result.members} members, {result.bytes} bytes of file data, CT {result.ctid} "
            f"'{result.hostname}' ({'unprivileged' if result.unprivileged else 'privileged'})"
        )
        return f"{archive.name} is readable end to end"


class Vzbackupdelete(BackupJob):
    name = "caisson.backup.delete"

    def perform(self, ctx: JobContext) -> str:
        from engine.backup.names import remove_backup

        archive = archive_path(self.storage(ctx), ctx.params.get("archive"))
        remove_backup(archive)  # InvalidState for a protected backup
        return f"removed {archive.name}"


class Vzprotect(BackupJob):
    """``params``: ``protected`` (bool) and/or ``notes`` (text) for one archive."""

    name = "caisson.backup.protect"

    def perform(self, ctx: JobContext) -> str:
        from engine.backup.names import notes_path, set_protected
        from engine.config import write_atomic

        archive = archive_path(self.storage(ctx), ctx.params.get("archive"))
        said = []
        if "protected" in ctx.params:
            set_protected(archive, bool(ctx.params["protected"]))
            said.append("protected" if ctx.params["protected"] else "unprotected")
        if "notes" in ctx.params:
            notes = str(ctx.params["notes"])
            if notes.strip():
                write_atomic(notes_path(archive), notes.rstrip("\n") + "\n", mode=0o644)
            else:
                notes_path(archive).unlink(missing_ok=True)
            said.append("notes set")
        return f"{archive.name}: {', '.join(said) or 'unchanged'}"


for _task in (Vzdump(), Vzrestore(), Vzverify(), Vzbackupdelete(), Vzprotect()):
    app.register_task(_task)
