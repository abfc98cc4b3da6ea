"""Push events to browsers through the channel layer, only once the database change is committed.

Groups: ``dc`` (everything, for users with Sys.Audit on ``/``), ``node.<name>``,
``ct.<id>`` and ``job.<id>`` (a job's log lines).  The live consumer checks
access before it joins a browser to any of them.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)


def group_for(path: str) -> str:
    """The group of an access path: /ct/100 -> ct.100, /nodes/pve -> node.pve."""
    kind, _, name = path.strip("/").partition("/")
    return {"ct": f"ct.{name}", "nodes": f"node.{name}"}.get(kind, "dc")


def _send(groups: list[str], event: dict) -> None:
    _send_many([(groups, event)])


def _send_many(batch: list[tuple[list[str], dict]]) -> None:
    """All of ``batch`` in one trip into the event loop: a tick's hundreds of events cost one switch."""
    layer = get_channel_layer()
    if layer is None or not batch:
        return

    async def send_all() -> None:
        for groups, event in batch:
            for group in dict.fromkeys(groups):
                try:
                    await layer.group_send(group, {"type": "live.event", "event": event})
                except Exception:  # noqa: BLE001 - a dead channel layer must not fail the job or the request
                    log.warning("live update to %s lost", group, exc_info=True)

    try:
        async_to_sync(send_all)()
    except Exception:  # noqa: BLE001 - e.g. called from a thread that runs an event loop: never fail the caller
        log.warning("live updates to %s lost", sorted({g for groups, _ in batch for g in groups}), exc_info=True)


def publish(paths: list[str], event: dict) -> None:
    """Send ``event`` to everyone watching any of ``paths`` (and the datacenter view) after commit."""
    publish_many([(paths, event)])


def publish_many(items: list[tuple[list[str], dict]]) -> None:
    """Several events (each to its paths' groups and the datacenter view) after commit, in one batch."""
    batch = [(["dc"] + [group_for(p) for p in paths], event) for paths, event in items]
    transaction.on_commit(lambda: _send_many(batch))


def publish_job_lines(job_id: int, lines: list[dict]) -> None:
    transaction.on_commit(lambda: _send([f"job.{job_id}"], {"type": "job.log", "job": job_id, "lines": lines}))
