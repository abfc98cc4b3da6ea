"""Template jobs: refresh the catalog, download with progress, build locally, remove."""

from __future__ import annotations

from tasks.base import JobContext, JobTask
from tasks.celery import app
from tasks.mirror import sync_templates
from tasks.runtime import node_engine, this_node


class TemplateJob(JobTask):
    abstract = True

    def store(self):
        from engine.templates.store import TemplateStore

        return TemplateStore(node_engine().layout.root)

    def after(self, ctx: JobContext) -> None:
        sync_templates(this_node())


class Update(TemplateJob):
    """Every enabled source (or ``params["source"]``); one that fails is logged by name, the others are still
    updated, and the job then fails naming each that did not update."""

    name = "caisson.templates.update"

    def perform(self, ctx: JobContext) -> str:
        from engine.templates.store import UpdateFailed

        failed = None
        try:
            counts = self.store().update(ctx.params.get("source"))
        except UpdateFailed as exc:
            counts, failed = exc.counts, exc
        for source, count in counts.items():
            ctx.log(f"{source}: {count} templates")
        if failed is not None:
            for source, error in failed.failed.items():
                ctx.log(f"{source}: update failed: {error}")
            raise failed
        return f"{sum(counts.values())} templates listed"


class EditSources(TemplateJob):
    """Change ``template/sources.json``: ``params``: ``op`` (add, edit, remove), ``source`` (its id), and for
    add/edit ``type``, ``url``, ``enabled`` (edit keeps what is not given, and the keyring)."""

    name = "caisson.templates.sources"

    def perform(self, ctx: JobContext) -> str:
        from engine.errors import AlreadyExists, NotFound, ValidationError

        store, params = self.store(), ctx.params
        op, sid = params.get("op"), params.get("source")
        sources = [s.to_dict() for s in store.sources()]
        index = next((i for i, s in enumerate(sources) if s["id"] == sid), None)
        fields = {k: params[k] for k in ("type", "url", "enabled") if k in params}
        if op == "add":
            if index is not None:
                raise AlreadyExists(f"template source {sid!r} already exists")
            sources.append({"id": sid, **fields})
        elif op in ("edit", "remove"):
            if index is None:
                raise NotFound(f"no template source {sid!r}")
            if op == "edit":
                sources[index].update(fields)
            else:
                del sources[index]
        else:
            raise ValidationError(f"op must be add, edit or remove, not {op!r}", key="op")
        store.set_sources(sources)
        ctx.log(f"template source {sid}: {op}" + (f" {fields}" if fields else ""))
        return "OK"


class Download(TemplateJob):
    name = "caisson.templates.download"

    def perform(self, ctx: JobContext) -> str:
        from engine.templates.download import download

        store = self.store()
        entry = store.find(ctx.job.target)
        ctx.log(f"downloading {entry.location}")

        def progress(done: int, total: int | None) -> None:
            text = f"{done / 1048576:.1f} of {total / 1048576:.1f} MiB" if total else f"{done / 1048576:.1f} MiB"
            ctx.progress(done, total, text)

        path = download(entry, store.cache, progress=progress, cancel=ctx.cancel_event)
        ctx.log(f"checksum verified; stored as {path.name}")
        return "OK"


class Build(TemplateJob):
    """``params``: ``builder`` (a registered builder), and those of ``suite``, ``packages`` (list) and
    ``flavor`` that the builder takes."""

    name = "caisson.templates.build"

    def perform(self, ctx: JobContext) -> str:
        from engine.builders import build, get_builder

        builder = get_builder(ctx.params.get("builder"))  # refused with the choices if unknown
        options = {}
        if ctx.params.get("suite") and builder.takes("suite"):
            options["suite"] = ctx.params["suite"]
        if ctx.params.get("packages") and builder.takes("packages"):
            options["packages"] = list(ctx.params["packages"])
            options["flavor"] = ctx.params.get("flavor", "app")
        ctx.log(f"build {builder.name} {options}" if options else f"build {builder.name}")
        ctx.progress(0, None, f"building {builder.name}", force=True)
        last = [""]

        def progress(done: float, total: int, text: str) -> None:
            if text != last[0] and not text.startswith(
                ("downloading packages", "packing", "unpacking ", "configuring ", "extracting ")
            ):
                ctx.log(text)  # stage changes go to the log; per-package lines only to the bar
            last[0] = text
            ctx.progress(done, total, text)

        path = build(builder.name, self.store().cache, options, progress=progress, cancel=ctx.cancel_event)
        ctx.log(f"stored as {path.name}")
        return "OK"


class OciPull(TemplateJob):
    """An image from a registry into the store as an OCI archive (Proxmox's ``oci-registry-pull``).

    ``params``: ``reference``, ``name`` (the archive's, else Proxmox's from the reference), ``username`` and
    ``registry_password_sealed`` (sealed by the web tier: never in clear in the job, its audit or the queue).
    A cancel keeps what was downloaded: the next pull of the same name resumes it; ``abandon`` drops it instead
    of pulling."""

    name = "caisson.templates.oci_pull"

    def perform(self, ctx: JobContext) -> str:
        from engine.oci.pull import abandon, pull
        from engine.oci.registry import Credentials
        from webui.models.queue import unseal_secret

        params = ctx.params
        store = self.store()
        if params.get("abandon"):
            found = abandon(store.cache, params["reference"], params.get("name") or None)
            ctx.log("dropped what the interrupted pull kept" if found else "nothing was kept to drop")
            return "OK"
        credentials = None
        if params.get("username"):
            credentials = Credentials(params["username"], unseal_secret(params.get("registry_password_sealed", "")))
        ctx.log(f"pulling {params['reference']}" + (f" as {params['username']}" if credentials else ""))

        def progress(done: int, total: int | None) -> None:
            text = f"{done / 1048576:.1f} of {total / 1048576:.1f} MiB" if total else f"{done / 1048576:.1f} MiB"
            ctx.progress(done, total, text)

        path = pull(
            store.root,
            store.cache,
            params["reference"],
            name=params.get("name") or None,
            credentials=credentials,
            progress=progress,
            cancel=ctx.cancel_event,
        )
        ctx.log(f"digests verified; stored as {path.name}")
        return "OK"


class OciSettings(TemplateJob):
    """The node's registry settings (``<root>/template/oci.json``): ``params``: ``mirrors``, ``insecure``."""

    name = "caisson.templates.oci_settings"

    def perform(self, ctx: JobContext) -> str:
        from engine.oci.registry import Settings

        settings = Settings(dict(ctx.params.get("mirrors") or {}), list(ctx.params.get("insecure") or []))
        settings.save(self.store().root)
        ctx.log(f"registry mirrors {settings.mirrors or 'none'}; plain HTTP: {settings.insecure or 'none'}")
        return "OK"


class Remove(TemplateJob):
    name = "caisson.templates.remove"

    def perform(self, ctx: JobContext) -> str:
        self.store().remove(ctx.job.target)
        ctx.log(f"removed {ctx.job.target}")
        return "OK"


for job_class in (Update, EditSources, Download, Build, OciPull, OciSettings, Remove):
    app.register_task(job_class())
