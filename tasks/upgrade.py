"""Risky changes of a container's software, each after a safety snapshot: ``vzupgrade`` (the container page's
"Update packages": the distribution's upgrade) and ``vzrebuild`` (a change of template: the root file system
made anew from another, or newer, template).

The snapshot comes first (``tasks.safety.before_risky``), so a bad upgrade is
one click away from undone on the task's page; then the upgrade command of
the container's ostype (``engine.distro.upgrade``) runs inside as root.  Its
output goes to the task log; a non-zero exit fails the task, naming the exit
code, and the snapshot stays for the rollback.
"""

from __future__ import annotations

from engine.distro.upgrade import upgrade_command
from engine.errors import EngineError, InvalidState
from tasks.celery import app
from tasks.containers import ContainerJob
from tasks.runtime import node_engine
from tasks.safety import before_risky

MAX_LINES = 400  # the log keeps the end of a long upgrade's output


class Upgrade(ContainerJob):
    name = "caisson.container.upgrade"

    def perform(self, ctx) -> str:
        engine, ctid = node_engine(), self.ctid(ctx)
        argv = upgrade_command(engine.config(ctid).current.values.get("ostype"))
        if engine.status(ctid, stats=False).status != "running":
            raise InvalidState(f"container {ctid} is not running; start it to update its packages")
        before_risky(ctx, ctid, "upgrade")
        ctx.log(f"running: {argv[-1]}")
        code, out, err = engine.exec_output(ctid, argv)
        lines = (out + err).decode(errors="replace").splitlines()
        if len(lines) > MAX_LINES:
            ctx.log(f"... ({len(lines) - MAX_LINES} lines left out)")
        for line in lines[-MAX_LINES:]:
            ctx.log(line)
        if code != 0:
            raise EngineError(f"the package upgrade exited {code}; the safety snapshot rolls it back")
        return "packages updated"


app.register_task(Upgrade())


class Rebuild(ContainerJob):
    """``vzrebuild``: ``params``: ``template`` (``local:vztmpl/<name>``).  A safety snapshot, then the stopped
    container's root file system made anew from the template, its settings kept (``engine.rebuild``); the old
    root and the snapshots stay, so the task page's one click rolls the change of template back."""

    name = "caisson.container.rebuild"

    def perform(self, ctx) -> str:
        from engine.rebuild import rebuild, rebuild_options
        from webui.models import Container

        engine, ctid, template = node_engine(), self.ctid(ctx), ctx.params["template"]
        if engine.status(ctid, stats=False).status == "running":
            raise InvalidState(f"container {ctid} is running; stop it before rebuilding it")
        rebuild_options(engine.config(ctid))  # refused before the snapshot if it cannot be rebuilt
        safety = before_risky(ctx, ctid, "template")
        ctx.log(f"rebuilding on {template}; root's password and SSH keys are the template's")
        rebuild(engine, ctid, template, keep_snapshots=safety is not None)
        Container.objects.filter(ctid=ctid).update(source_template=template.removeprefix("local:vztmpl/"))
        return f"rebuilt on {template.removeprefix('local:vztmpl/')}"


app.register_task(Rebuild())
