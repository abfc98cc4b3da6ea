"""Template jobs: refresh the catalog, download with progress, build locally, remove."""
from __future__ import annotations

from engine.errors import ValidationError
from tasks.base import JobContext, JobTask
from tasks.celery import app
from tasks.node import engine, sync_templates, this_node


class TemplateJob(JobTask):
    abstract = True

    def store(self):
        from engine.templates.store import TemplateStore

        return TemplateStore(engine().layout.root)

    def after(self, ctx: JobContext) -> None:
        sync_templates(this_node())


class Update(TemplateJob):
    name = "caisson.templates.update"

    def perform(self, ctx: JobContext) -> str:
        counts = self.store().update(ctx.params.get("source"))
        for source, count in counts.items():
            ctx.log(f"{source}: {count} templates")
        return f"{sum(counts.values())} templates listed"


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
    """``params``: ``builder`` (busybox or debian), ``suite``, ``packages`` (list), ``flavor``."""
    name = "caisson.templates.build"

    def perform(self, ctx: JobContext) -> str:
        from engine.builders.__main__ import main as build_main

        builder = ctx.params.get("builder")
        if builder not in ("busybox", "debian"):
            raise ValidationError(f"builder: '{builder}' is not a local builder (busybox, debian)", key="builder")
        argv = [builder]
        if builder == "debian":
            if ctx.params.get("suite"):
                argv += ["--suite", ctx.params["suite"]]
            if ctx.params.get("packages"):
                argv += ["--packages", ",".join(ctx.params["packages"]), "--flavor", ctx.params.get("flavor", "app")]
        argv += ["--dest", str(self.store().cache)]
        ctx.log("build " + " ".join(argv))
        ctx.progress(0, None, f"building {builder}", force=True)
        if build_main(argv):
            raise ValidationError(f"the {builder} build failed; see the node's log")
        return "OK"


class Remove(TemplateJob):
    name = "caisson.templates.remove"

    def perform(self, ctx: JobContext) -> str:
        self.store().remove(ctx.job.target)
        ctx.log(f"removed {ctx.job.target}")
        return "OK"


for job_class in (Update, Download, Build, Remove):
    app.register_task(job_class())
