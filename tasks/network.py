"""The node's network jobs (the Network panel): create or edit a bridge, delete one, apply the whole file.

The web tier has no root and never reads the host: it queues these, the node's agent runs them through
``engine.network.bridge_edit``, and the mirror (``tasks.mirror.sync_network``) reports the result back.
"""

from __future__ import annotations

from tasks.base import JobContext, JobTask
from tasks.celery import app
from tasks.mirror import sync_network
from tasks.runtime import node_engine, this_node


class NetworkJob(JobTask):
    abstract = True

    def after(self, ctx: JobContext) -> None:
        from engine.network import hostfw

        try:
            hostfw.apply(node_engine().layout.root)  # the node level filters on the bridges as they now are
        except Exception as exc:  # noqa: BLE001 - reported in the job's log; the bridge change stands
            ctx.log(f"node firewall not refreshed: {exc}")
        sync_network(this_node())


class SetBridge(NetworkJob):
    """``params``: ``op`` (create or edit) and ``fields`` (see ``bridge_from_fields``); target: the bridge."""

    name = "caisson.network.set"

    def perform(self, ctx: JobContext) -> str:
        from engine.network.bridge_edit import bridge_from_fields, render_stanza, set_bridge

        bridge = bridge_from_fields(ctx.job.target, ctx.params.get("fields", {}))
        ctx.log(render_stanza(bridge))
        set_bridge(node_engine().layout.root, bridge, create=ctx.params.get("op") == "create")
        return f"bridge {bridge.name} {'created' if ctx.params.get('op') == 'create' else 'changed'} and applied"


class DeleteBridge(NetworkJob):
    """Refused while a container's NIC names the bridge (the containers are listed)."""

    name = "caisson.network.delete"

    def perform(self, ctx: JobContext) -> str:
        from engine.errors import NotFound
        from engine.network.bridge_edit import delete_bridge
        from engine.network.nics import from_config

        engine, name = node_engine(), ctx.job.target
        users = []
        for ctid in engine.ids():
            try:
                if any(nic.bridge == name for nic in from_config(engine.config(ctid))):
                    users.append(ctid)
            except NotFound:
                continue
        delete_bridge(engine.layout.root, name, users)
        return f"bridge {name} deleted"


class ApplyNetwork(NetworkJob):
    """Bring the host to the interfaces file as it stands (after an administrator edited it by hand)."""

    name = "caisson.network.apply"

    def perform(self, ctx: JobContext) -> str:
        from engine.network.bridges import NodeNetwork

        node = NodeNetwork(node_engine().layout.root)
        node.ensure_bridges()
        return f"{len(node.bridges())} bridge(s) applied"


for task in (SetBridge, DeleteBridge, ApplyNetwork):
    app.register_task(task())
