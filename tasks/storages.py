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


class ReceiveTemplate(JobTask):
    """A template uploaded from the browser (``webui.filestream``): frames appended to a hidden partial file
    in the local store, the written offset published after each, the SHA-256 computed at the end and the
    file renamed into place.  A pause (no frame for ``PAUSE`` seconds) ends the job with the partial file
    kept; the next chunk queues a new job that goes on from there.  ``params``: ``stream``, ``name``, ``size``.
    """

    name = "caisson.templates.upload"
    PAUSE = 60

    def perform(self, ctx: JobContext) -> str:
        import hashlib

        from engine.errors import AlreadyExists, ValidationError
        from engine.templates.entry import check_template_name
        from engine.templates.store import TemplateStore
        from tasks.runtime import node_engine

        stream, size = ctx.params["stream"], int(ctx.params["size"])
        name = check_template_name(ctx.params["name"])
        store = TemplateStore(node_engine().layout.root)
        store.cache.mkdir(parents=True, exist_ok=True)
        final, partial = store.cache / name, store.cache / f".upload-{stream}-{name}"
        try:
            if final.exists():
                raise AlreadyExists(f"template {name} is already in the store")
            with open(partial, "ab") as out:
                offset = out.tell()
                filestream.save_session(stream, {"offset": offset})
                while offset < size:
                    frame = filestream.pull(stream, self.PAUSE)
                    if frame is None:
                        return f"paused at {offset} of {size} bytes (the upload can go on)"
                    at, data = frame
                    if at != offset:  # a retried chunk's copy, or past a gap: the client resumes from offset
                        continue
                    if offset + len(data) > size:
                        raise ValidationError(f"more data than the announced {size} bytes", key="size")
                    out.write(data)
                    out.flush()
                    offset += len(data)
                    filestream.save_session(stream, {"offset": offset})
                    ctx.progress(offset, size, "uploading")
                os.fsync(out.fileno())
            digest = hashlib.sha256()
            with open(partial, "rb") as done:
                for block in iter(lambda: done.read(1 << 20), b""):
                    digest.update(block)
            os.replace(partial, final)
        except EngineError as exc:
            partial.unlink(missing_ok=True)
            filestream.save_session(stream, {"error": str(exc)})
            filestream.drop(stream)
            raise
        from tasks.mirror import sync_templates
        from tasks.runtime import this_node

        sync_templates(this_node())  # in the store's mirror before the client hears it is done
        filestream.save_session(stream, {"sha256": digest.hexdigest()})
        ctx.log(f"sha256 {digest.hexdigest()}")
        return f"{name} stored ({size} bytes, sha256 {digest.hexdigest()})"

    def after(self, ctx: JobContext) -> None:
        from tasks.mirror import sync_templates
        from tasks.runtime import this_node

        sync_templates(this_node())


for task in (StreamBackup, AddStorage, RemoveStorage, ReceiveTemplate):
    app.register_task(task())
