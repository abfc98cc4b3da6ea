"""Container jobs: create, power actions, config changes, destroy.  Each ends by mirroring the container."""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace

from engine.errors import EngineError, ValidationError
from tasks import start_diagnosis
from tasks.base import JobContext, JobTask
from tasks.celery import app
from tasks.mirror import sync_container, sync_templates
from tasks.runtime import node_engine, this_node
from tasks.safety import before_risky
from webui.models import BackupSchedule, Container


def refuse_root_settings(ctx: JobContext, settings: dict[str, str], what: str) -> None:
    """The node's own check of a config only it can read (an archive's, a snapshot's): root-equivalent
    settings (``engine.root_settings``) go through only for a job a superuser asked for, checked now.
    Raised before anything is written, so a refused job leaves nothing behind.  A job asked with a
    privilege-separated API token is held to the token's rights (``webui.access.job_access``)."""
    from webui.access import job_access

    if not settings or job_access(ctx.job).superuser:
        return
    reasons = "; ".join(f"{key}: {why}" for key, why in settings.items())
    raise ValidationError(
        f"permission denied: {what} sets {', '.join(settings)}, which only a superuser may set ({reasons})",
        key=next(iter(settings)),
    )


def refuse_nic_settings(
    ctx: JobContext,
    ctid: int,
    values: dict[str, str],
    what: str,
    old: dict[str, str] | None = None,
    new_mac: bool = False,
) -> None:
    """The node's own check of the NICs of a config only it can read: the rules of ``webui.nic_rights`` (usable
    bridges, ``VM.Config.Network`` to leave the allocation), against the rights the job's user holds now.

    ``old`` is the config a restore replaces (unchanged values need no more than before); ``new_mac`` when the
    engine gives every NIC a fresh MAC (a clone, a ``unique`` restore).  A superuser passes, as Proxmox's root
    restores an archive whose bridge this node lacks: the job only warns, and start names the bridge."""
    from django.core.exceptions import PermissionDenied
    from django.core.exceptions import ValidationError as FieldErrors

    from engine.network.nics import parse_nic
    from webui.access import job_access
    from webui.nic_rights import check_nic_rights, nic_findings

    nics = {}
    for key, value in values.items():
        if key.startswith("net") and key[3:].isdigit():
            nic = parse_nic(int(key[3:]), value)
            if nic.bridge and not os.path.exists(f"/sys/class/net/{nic.bridge}"):
                ctx.log(
                    f"warning: {key}: bridge '{nic.bridge}' does not exist on this node; the container will "
                    "not start until it does"
                )
            nics[key] = replace(nic, hwaddr=None).to_value() if new_mac else value
    access = job_access(ctx.job)
    if not nics or access.superuser:
        return
    node, container = this_node(), Container.objects.filter(ctid=ctid).exclude(status=Container.Status.CREATING)
    try:
        check_nic_rights(access, node, ctid, nics, old=old, obj=container.first() if old is not None else None)
    except FieldErrors as exc:
        key, messages = next(iter(exc.message_dict.items()))
        raise ValidationError(f"{what}: {key}: {messages[0]}", key=key) from None
    except PermissionDenied as exc:
        key = next(k for k, v in nics.items() if nic_findings(node, ctid, k, v, (old or {}).get(k))[1])
        raise ValidationError(f"{what}: {exc}", key=key) from None


class ContainerJob(JobTask):
    abstract = True

    def ctid(self, ctx: JobContext) -> int:
        return int(ctx.job.target)

    def after(self, ctx: JobContext) -> None:
        sync_container(this_node(), self.ctid(ctx))


class Create(ContainerJob):
    """``params``: ``template`` (``local:vztmpl/<name>``), ``options`` (pct keys), ``password_hash`` (SHA-512
    crypt: the web tier never queues a clear password; ``password``, clear, is still taken from other callers),
    ``ssh_public_keys``, ``start`` (start once created), ``isolated_idmap`` (an id range of its own),
    ``provision`` (``user_data``, ``meta_data``, ``network_config``, ``firstboot``: engine.provision)."""

    name = "caisson.container.create"

    def perform(self, ctx: JobContext) -> str:
        from engine.credentials import set_credentials

        ctid, params = self.ctid(ctx), ctx.params
        ctx.log(f"extracting {params['template']}")
        ctx.progress(0, None, "extracting template", force=True)
        options = dict(params.get("options") or {})
        if params.get("rootfs"):
            options["rootfs"] = params["rootfs"]  # "<storage>:<GiB>" from the wizard's root disk step

        def credentials() -> None:  # a step of the create: its failure undoes the create, all of it or nothing
            ctx.log("setting root's password and SSH keys")
            set_credentials(
                node_engine(),
                ctid,
                params.get("password"),
                params.get("ssh_public_keys"),
                password_hash=params.get("password_hash"),
            )

        from engine.provision import Provisioning, write

        wanted = params.get("password") or params.get("password_hash") or params.get("ssh_public_keys")
        provisioning = Provisioning.from_dict(params.get("provision"))

        def finish() -> None:
            if wanted:
                credentials()
            if provisioning is not None:
                ctx.log("writing the first-boot provisioning (" + ", ".join(provisioning.documents()) + ")")
                write(node_engine(), ctid, provisioning)

        node_engine().create(
            ctid,
            params["template"],
            options,
            finish=finish if wanted or provisioning else None,
            isolated_idmap=bool(params.get("isolated_idmap")),
        )
        ctx.log(f"created CT {ctid}")
        if params.get("start"):
            ctx.progress(0, None, "starting", force=True)
            for warning in node_engine().start(ctid).warnings or []:
                ctx.log(f"warning: {warning}")
            ctx.log(f"started CT {ctid}")
        return "OK"

    def after(self, ctx: JobContext) -> None:
        container = sync_container(this_node(), self.ctid(ctx))
        if container is None:  # the create failed: drop the placeholder row the web tier made
            Container.objects.filter(ctid=self.ctid(ctx), status=Container.Status.CREATING).delete()
            BackupSchedule.forget_container(self.ctid(ctx))
            from webui.live import publish

            publish([f"/ct/{self.ctid(ctx)}"], {"type": "ct.removed", "ctid": self.ctid(ctx)})


@contextlib.contextmanager
def app_console_in_log(ctx: JobContext, ctid: int, most: int = 50):
    """An application container's console output during the block (what it printed as it started, its last
    words at a stop) copied into the job's log, its newest ``most`` lines."""
    engine = node_engine()
    path = engine.layout.console_log(ctid)
    before = path.stat().st_size if path.exists() else 0
    yield
    if not engine.config(ctid).current.values.get("entrypoint"):
        return
    data = engine.console_log(ctid)
    new = data[before:] if len(data) >= before else data[-4096:]  # a log replaced by its tail: its end
    for line in new.decode(errors="replace").splitlines()[-most:]:
        ctx.log(f"console: {line}")


class Start(ContainerJob):
    name = "caisson.container.start"

    def perform(self, ctx: JobContext) -> str:
        if ctx.params.get("reason"):
            ctx.log(ctx.params["reason"])
        with app_console_in_log(ctx, self.ctid(ctx)):
            try:
                status = node_engine().start(self.ctid(ctx))
            except EngineError as exc:
                start_diagnosis.record(ctx, self.ctid(ctx), exc)
                raise
            for warning in status.warnings or []:
                ctx.log(f"warning: {warning}")
            if status.init == "app":
                entrypoint = node_engine().config(self.ctid(ctx)).current.values["entrypoint"]
                ctx.log(f"application ({entrypoint}) running as pid {status.pid}")
            else:
                ctx.log(f"init ({status.init}) running as pid {status.pid}")
        return "OK"


class Shutdown(ContainerJob):
    name = "caisson.container.shutdown"

    def perform(self, ctx: JobContext) -> str:
        timeout = float(ctx.params.get("timeout", 60))
        force = bool(ctx.params.get("force_stop", True))
        ctx.log(f"asking init to shut down (timeout {timeout:g} s{', then stop' if force else ''})")
        with app_console_in_log(ctx, self.ctid(ctx)):
            node_engine().shutdown(self.ctid(ctx), timeout=timeout, force_stop=force)
        return "OK"


class Stop(ContainerJob):
    name = "caisson.container.stop"

    def perform(self, ctx: JobContext) -> str:
        with app_console_in_log(ctx, self.ctid(ctx)):
            node_engine().stop(self.ctid(ctx))
        return "OK"


class Reboot(ContainerJob):
    name = "caisson.container.reboot"

    def perform(self, ctx: JobContext) -> str:
        node_engine().reboot(self.ctid(ctx), timeout=float(ctx.params.get("timeout", 60)))
        return "OK"


class Destroy(ContainerJob):
    name = "caisson.container.destroy"

    def perform(self, ctx: JobContext) -> str:
        from engine.recovery import sweep

        node_engine().destroy(self.ctid(ctx), force=bool(ctx.params.get("force", False)))
        ctx.log(f"removed CT {self.ctid(ctx)} and its volumes")
        for action in sweep(node_engine(), self.ctid(ctx)):  # a killed backup's copy or partial archive
            ctx.log(action.detail)
        return "OK"

    def after(self, ctx: JobContext) -> None:
        ctid = self.ctid(ctx)
        if node_engine().exists(ctid):
            super().after(ctx)
            return
        # Gone from the node: its row goes too, even one still marked "creating" (an interrupted create).
        from webui.live import publish

        Container.objects.filter(ctid=ctid).delete()
        BackupSchedule.forget_container(ctid)
        publish([f"/ct/{ctid}", this_node().path], {"type": "ct.removed", "ctid": ctid})


class Set(ContainerJob):
    """``params``: ``changes`` (key -> value), ``delete`` (keys), ``digest`` (refuse a stale edit)."""

    name = "caisson.container.set"

    def perform(self, ctx: JobContext) -> str:
        changes, delete = ctx.params.get("changes") or {}, ctx.params.get("delete") or []
        if not changes and not delete:
            raise ValidationError("nothing to change")
        for key, value in changes.items():
            ctx.log(f"{key}: {value}")
        for key in delete:
            ctx.log(f"delete {key}")
        if ctx.params.get("risky"):
            before_risky(ctx, self.ctid(ctx), "config")
        live = node_engine().set(self.ctid(ctx), changes, delete, digest=ctx.params.get("digest"))
        if live:
            ctx.log(f"applied to the running container: {', '.join(live)}")
        return "OK"


class Snapshot(ContainerJob):
    """``params``: ``name``, ``description``.  A running container is frozen for the instant of the snapshot."""

    name = "caisson.container.snapshot"

    def perform(self, ctx: JobContext) -> str:
        info = node_engine().snapshot(self.ctid(ctx), ctx.params["name"], ctx.params.get("description", ""))
        ctx.log(f"snapshot '{info.name}' taken")
        return "OK"


class Rollback(ContainerJob):
    name = "caisson.container.rollback"

    def perform(self, ctx: JobContext) -> str:
        before_risky(ctx, self.ctid(ctx), "rollback")  # the state rolled away from can be come back to
        node_engine().rollback(self.ctid(ctx), ctx.params["name"])
        ctx.log(f"rolled back to '{ctx.params['name']}'")
        return "OK"


class DeleteSnapshot(ContainerJob):
    name = "caisson.container.delete_snapshot"

    def perform(self, ctx: JobContext) -> str:
        node_engine().delete_snapshot(self.ctid(ctx), ctx.params["name"], force=bool(ctx.params.get("force")))
        ctx.log(f"snapshot '{ctx.params['name']}' deleted")
        return "OK"


class Clone(ContainerJob):
    """``params``: ``newid``, ``snapshot``, ``full``, ``storage``, ``hostname``."""

    name = "caisson.container.clone"

    def perform(self, ctx: JobContext) -> str:
        from engine.root_settings import root_equivalent

        p = ctx.params
        source = node_engine().config(self.ctid(ctx))
        section = source.snapshots.get(p.get("snapshot") or "") or source.current
        settings = root_equivalent(section)
        settings.pop("lxc.idmap", None)  # not carried over: the clone gets a fresh range of its own (engine.idranges)
        refuse_root_settings(ctx, settings, f"CT {self.ctid(ctx)}'s config")
        refuse_nic_settings(ctx, int(p["newid"]), section.values, f"CT {self.ctid(ctx)}'s config", new_mac=True)
        ctx.progress(0, None, f"cloning to CT {p['newid']}", force=True)
        node_engine().clone(
            self.ctid(ctx),
            int(p["newid"]),
            snapshot=p.get("snapshot") or None,
            full=bool(p.get("full")),
            storage=p.get("storage") or None,
            hostname=p.get("hostname") or None,
        )
        rootfs = node_engine().config(int(p["newid"])).current.values.get("rootfs", "")
        ctx.log(f"CT {p['newid']} created on {rootfs}")
        return "OK"

    def after(self, ctx: JobContext) -> None:
        super().after(ctx)
        newid = int(ctx.params["newid"])
        if sync_container(this_node(), newid) is None:  # the clone failed: free the reserved ID
            Container.objects.filter(ctid=newid, status=Container.Status.CREATING).delete()
            BackupSchedule.forget_container(newid)


class Resize(ContainerJob):
    """``params``: ``disk`` (rootfs, mpN), ``size`` (``4G`` or ``+1G``); grows only."""

    name = "caisson.container.resize"

    def perform(self, ctx: JobContext) -> str:
        size = node_engine().resize(self.ctid(ctx), ctx.params["disk"], ctx.params["size"])
        ctx.log(f"{ctx.params['disk']} is now {size / 1073741824:.1f} GiB")
        return "OK"


class MakeTemplate(ContainerJob):
    """``params``: ``name`` (``<name>.tar.zst`` in the node's store). The container must be stopped."""

    name = "caisson.container.make_template"

    def perform(self, ctx: JobContext) -> str:
        ctx.log(f"packing CT {self.ctid(ctx)} as {ctx.params['name']}")
        path = node_engine().make_template(self.ctid(ctx), ctx.params["name"])
        ctx.log(f"template local:vztmpl/{path.name}: {path.stat().st_size / 1048576:.1f} MiB")
        return "OK"

    def after(self, ctx: JobContext) -> None:
        super().after(ctx)
        sync_templates(this_node())


for job_class in (
    Create,
    Start,
    Shutdown,
    Stop,
    Reboot,
    Destroy,
    Set,
    Snapshot,
    Rollback,
    DeleteSnapshot,
    Clone,
    Resize,
    MakeTemplate,
):
    app.register_task(job_class())
