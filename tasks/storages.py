"""A node's storages: added and removed (``storage.cfg``), and their files sent to the web tier through the
broker (``webui.filestream``: a backup archive downloaded).  The web server never reads the node's disk, so
web and node may be different hosts."""

from __future__ import annotations

import os

from engine.errors import EngineError, NotFound
from tasks.base import JobContext, JobTask
from tasks.celery import app
from webui import filestream


class StreamBackup(JobTask):
    """``params``: ``storage``, ``archive`` (a name the storage's dump directory lists), ``stream``."""

    name = "caisson.storage.download"

    def perform(self, ctx: JobContext) -> str:
        from engine.backup.names import list_backups
        from tasks.mirror import backup_storages

        stream = ctx.params.get("stream", "")
        try:
            storage, archive = ctx.params.get("storage"), ctx.params.get("archive")
            dumpdir = backup_storages().get(storage)
            if dumpdir is None:
                raise NotFound(f"storage '{storage}' holds no backups on this node")
            if archive not in {b.name for b in list_backups(dumpdir)}:
                raise NotFound(f"no backup '{archive}' on storage '{storage}'")
            fd = os.open(dumpdir / archive, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except EngineError as exc:
            filestream.fail(stream, str(exc))
            raise
        with os.fdopen(fd, "rb") as source:
            ctx.log(f"sending {archive} ({os.fstat(fd).st_size} bytes)")
            sent = filestream.send(stream, source, cancelled=lambda: ctx.cancel_event.is_set())
        return f"{sent} bytes sent"


class AddStorage(JobTask):
    """``params``: ``type`` (dir, btrfs, overlay), ``path``, ``content``, ``nodes``; the target is its ID."""

    name = "caisson.storage.add"

    def perform(self, ctx: JobContext) -> str:
        from engine.storage.manage import add_storage
        from tasks.runtime import node_engine

        props = {k: str(ctx.params[k]) for k in ("path", "content", "nodes") if ctx.params.get(k)}
        definition = add_storage(node_engine().layout.root, ctx.params.get("type", ""), ctx.job.target, props)
        return f"storage {definition.id} ({definition.type}) added at {definition.path}"

    def after(self, ctx: JobContext) -> None:
        from tasks.mirror import sync_storages
        from tasks.runtime import this_node

        sync_storages(this_node())


class RemoveStorage(AddStorage):
    """Forgets the definition; refused while a container has a volume there (its files stay on disk)."""

    name = "caisson.storage.remove"

    def perform(self, ctx: JobContext) -> str:
        from engine.storage.manage import remove_storage, volume_users
        from tasks.runtime import node_engine

        engine = node_engine()
        remove_storage(engine.layout.root, ctx.job.target, volume_users(engine, ctx.job.target))
        return f"storage {ctx.job.target} removed (its directory and files are kept)"


for task in (StreamBackup, AddStorage, RemoveStorage):
    app.register_task(task())
