"""Migration jobs: the source's ``vzmigrate`` and the target's ``vzmigrate_in`` (engine.migrate does the work).

The source job makes its one-time identity, queues the receiver job on the target node's queue with its
certificate (public), waits for the receiver's endpoint (address, port, fingerprint: public values, put in
the receiver job's row), then streams the container there.  When the target confirms the commit, the
database row moves to the target node before the source's copy is removed, so everything keyed by the row
or by the container's path (ACLs, pool, backup-job and protection-policy membership, task history, notes)
follows the container and nothing sees it vanish.

Each node's agent listens for migrations on ``CAISSON_MIGRATION_ADDRESS`` (default 127.0.0.1: set the
node's cluster address), optionally inside network namespace ``CAISSON_MIGRATION_NETNS``; the source
connects from ``CAISSON_MIGRATION_NETNS`` too.
"""

from __future__ import annotations

import fcntl
import os
import time

from engine.errors import EngineError, HostError
from tasks.base import JobContext
from tasks.celery import app
from tasks.containers import ContainerJob
from tasks.firewall import sync_firewall
from tasks.mirror import sync_container
from tasks.runtime import node_engine, this_node
from webui.models import Container, Job, Node

ENDPOINT_WAIT = 120.0  # seconds for the target's agent to start listening (its queue may be busy)


def _netns() -> str | None:
    return os.environ.get("CAISSON_MIGRATION_NETNS") or None


class MigrateIn(ContainerJob):
    """The target's side.  ``params``: ``peer_cert`` (the source's certificate), ``storage`` (optional),
    ``source`` (the source node's name, for the log)."""

    name = "caisson.container.migrate_in"

    def perform(self, ctx: JobContext) -> str:
        from engine.migrate.receive import Receiver

        ctid, params = self.ctid(ctx), ctx.params
        address = os.environ.get("CAISSON_MIGRATION_ADDRESS", "127.0.0.1")
        receiver = Receiver(
            node_engine(), ctid, params["peer_cert"], (address, 0), storage=params.get("storage"), netns=_netns()
        )
        endpoint = receiver.endpoint()
        Job.objects.filter(pk=ctx.job.pk).update(params={**params, "endpoint": endpoint})
        ctx.log(f"listening for CT {ctid} from node {params.get('source', '?')} on {address}:{endpoint['port']}")
        result = receiver.run(timeout=60.0, log=ctx.log)
        return f"CT {ctid} received ({result['bytes']} bytes)"

    def after(self, ctx: JobContext) -> None:
        super().after(ctx)
        sync_firewall(this_node())  # its <ID>.fw arrived with it


class Migrate(ContainerJob):
    """The source's side.  ``params``: ``target`` (node name), ``restart``, ``online`` (refused by the engine),
    ``storage`` (optional target storage), ``drop_snapshots`` (leave the snapshots behind)."""

    name = "caisson.container.migrate"

    def perform(self, ctx: JobContext) -> str:
        from engine.migrate.channel import certificate_of, make_identity
        from engine.migrate.send import check_online, migrate
        from webui.models.queue import JobRefused, submit

        ctid, params = self.ctid(ctx), ctx.params
        if params.get("online"):
            check_online()
        target = Node.objects.filter(name=params["target"]).first()
        if target is None or target.name == this_node().name:
            raise EngineError(f"migration: no other node named '{params['target']}'")
        engine = node_engine()
        identity = engine.layout.run / "migrate" / f"out-{ctid}.pem"
        make_identity(identity)
        held = os.open(identity, os.O_RDONLY | os.O_CLOEXEC)
        fcntl.flock(held, fcntl.LOCK_SH)  # the node's sweep removes only a key no job holds
        try:
            try:
                receiver = submit(
                    "vzmigrate_in",
                    target,
                    f"/ct/{ctid}",
                    str(ctid),
                    user=ctx.job.user,
                    params={
                        "peer_cert": certificate_of(identity),
                        "storage": params.get("storage"),
                        "source": this_node().name,
                    },
                )
            except JobRefused as err:
                raise HostError(f"migration: the target node refused: {err}") from None
            ctx.log(f"receiver job {receiver.pk} queued on node {target.name}")
            endpoint = self._endpoint(ctx, receiver)
            to = f"{endpoint['address']}:{endpoint['port']}"
            mode = "restart" if params.get("restart") else "offline"
            ctx.log(f"migrating CT {ctid} to node {target.name} ({to}), {mode} mode")

            def progress(done: int, total: int) -> None:
                # total 0: snapshot streams, whose size is not known before they are made
                ctx.progress(
                    done, total, f"sent {done >> 20} of {total >> 20} MiB" if total else f"sent {done >> 20} MiB"
                )

            def committed() -> None:  # the row follows before the source copy goes (see the module's docstring)
                Container.objects.filter(ctid=ctid).update(node=target)

            result = migrate(
                engine,
                ctid,
                to,
                endpoint["fingerprint"],
                identity,
                restart=bool(params.get("restart")),
                drop_snapshots=bool(params.get("drop_snapshots")),
                netns=_netns(),
                log=ctx.log,
                progress=progress,
                committed=committed,
            )
        finally:
            identity.unlink(missing_ok=True)
            os.close(held)
        rate = result.bytes / max(result.seconds, 1e-6) / (1 << 20)
        ctx.log(f"migration finished: {result.bytes} bytes in {result.seconds:.1f} s ({rate:.1f} MiB/s)")
        return f"CT {ctid} migrated to {target.name}"

    @staticmethod
    def _endpoint(ctx: JobContext, receiver: Job) -> dict:
        deadline = time.monotonic() + ENDPOINT_WAIT
        while time.monotonic() < deadline:
            ctx.check_cancel()
            row = Job.objects.filter(pk=receiver.pk).values("status", "message", "params").first()
            if row and row["params"].get("endpoint"):
                return row["params"]["endpoint"]
            if row is None or row["status"] not in Job.ACTIVE:
                raise HostError(f"migration: the target refused: {row['message'] if row else 'its job vanished'}")
            time.sleep(0.1)
        Job.objects.filter(pk=receiver.pk, status=Job.Status.QUEUED).update(cancel_requested=True)
        raise HostError(f"migration: the target node did not start listening within {ENDPOINT_WAIT:g} s")

    def after(self, ctx: JobContext) -> None:
        node = this_node()
        row = Container.objects.filter(ctid=self.ctid(ctx)).select_related("node").first()
        if row is None or row.node_id == node.pk:
            sync_container(node, self.ctid(ctx))
        sync_firewall(node)  # its <ID>.fw left with it


for task in (Migrate, MigrateIn):
    app.register_task(task())
