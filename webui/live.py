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
    layer = get_channel_layer()
    if layer is None:
        return
    for group in dict.fromkeys(groups):
        try:
            async_to_sync(layer.group_send)(group, {"type": "live.event", "event": event})
        except Exception:  # noqa: BLE001 - a dead channel layer must not fail the job or the request
            log.warning("live update to %s lost", group, exc_info=True)


def publish(paths: list[str], event: dict) -> None:
    """Send ``event`` to everyone watching any of ``paths`` (and the datacenter view) after commit."""
    groups = ["dc"] + [group_for(p) for p in paths]
    transaction.on_commit(lambda: _send(groups, event))


def publish_job_lines(job_id: int, lines: list[dict]) -> None:
    transaction.on_commit(lambda: _send([f"job.{job_id}"], {"type": "job.log", "job": job_id, "lines": lines}))
