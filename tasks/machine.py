"""Jobs for a container as a machine: suspend, resume, convert to template, move a volume, files in and out."""

from __future__ import annotations

import io

from engine.errors import ValidationError
from tasks.celery import app
from tasks.containers import ContainerJob
from tasks.runtime import node_engine
from webui.models import staging


class Suspend(ContainerJob):
    name = "caisson.container.suspend"

    def perform(self, ctx) -> str:
        node_engine().suspend(self.ctid(ctx))
        ctx.log(f"CT {self.ctid(ctx)} suspended (frozen)")
        return "OK"


class Resume(ContainerJob):
    name = "caisson.container.resume"

    def perform(self, ctx) -> str:
        node_engine().resume(self.ctid(ctx))
        ctx.log(f"CT {self.ctid(ctx)} resumed")
        return "OK"


class Template(ContainerJob):
    name = "caisson.container.template"

    def perform(self, ctx) -> str:
        node_engine().template(self.ctid(ctx))
        ctx.log(f"CT {self.ctid(ctx)} is now a template")
        return "OK"


class MoveVolume(ContainerJob):
    """``params``: ``volume`` (rootfs, mpN), ``storage``, ``delete``."""

    name = "caisson.container.move_volume"

    def perform(self, ctx) -> str:
        p = ctx.params
        ctx.progress(0, None, f"moving {p['volume']} to {p['storage']}", force=True)
        new = node_engine().move_volume(self.ctid(ctx), p["volume"], p["storage"], delete=bool(p.get("delete")))
        ctx.log(f"{p['volume']} is now {new}{'' if p.get('delete') else '; the old volume is kept as unused'}")
        return "OK"


class PushFile(ContainerJob):
    """``params``: ``path``, ``user``, ``group``, ``perms``, ``blob`` and ``sha256`` (webui.models.staging)."""

    name = "caisson.container.push_file"

    def perform(self, ctx) -> str:
        p = ctx.params
        try:
            data = staging.take_upload(p["blob"], p["sha256"])
        except ValueError as exc:
            raise ValidationError(str(exc), key="file") from None
        info = node_engine().push(
            self.ctid(ctx), io.BytesIO(data), p["path"], p.get("user"), p.get("group"), p.get("perms")
        )
        ctx.log(
            f"wrote {info.path}: {info.size} bytes, {info.user or info.uid}:{info.group or info.gid}, mode {info.mode}"
        )
        return "OK"


class PullFile(ContainerJob):
    """``params``: ``path``; the bytes are staged for the job's user (webui.models.staging)."""

    name = "caisson.container.pull_file"

    def perform(self, ctx) -> str:
        sink = io.BytesIO()
        engine = node_engine()
        info = engine.stat_file(self.ctid(ctx), ctx.params["path"])
        if info.size > staging.MAX_BYTES:
            raise ValidationError(
                f"{info.path} is {info.size} bytes; the browser transfers at most {staging.MAX_BYTES}", key="path"
            )
        info = engine.pull(self.ctid(ctx), ctx.params["path"], sink)
        staging.stage_download(ctx.job.pk, sink.getvalue(), info.as_dict())
        ctx.log(
            f"read {info.path}: {info.size} bytes, {info.user or info.uid}:{info.group or info.gid}, mode {info.mode}"
        )
        return "OK"


for job_class in (Suspend, Resume, Template, MoveVolume, PushFile, PullFile):
    app.register_task(job_class())
