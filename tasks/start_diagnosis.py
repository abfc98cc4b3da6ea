"""A failed start's guided diagnosis, made on the node (its console and disks are here) and kept in the job.

The job's ``params["diagnosis"]`` holds ``engine.diagnosis.Diagnosis.as_dict()``; the container's page shows
the newest one while the container is not running. Its cause and fix also go to the task's log.
"""

from __future__ import annotations

import logging

from engine.diagnosis import diagnose
from engine.errors import EngineError
from tasks.base import JobContext
from tasks.runtime import node_engine, this_node
from webui.models import Job, StorageMirror

log = logging.getLogger(__name__)


def _free_bytes(ctid: int) -> int | None:
    """Bytes left on the storage of the root disk, as the node last reported it (None: unknown)."""
    try:
        rootfs = str(node_engine().config(ctid).current.values.get("rootfs") or "")
    except EngineError:
        return None
    storage, sep, _ = rootfs.partition(":")
    row = StorageMirror.objects.filter(node=this_node(), name=storage).first() if sep else None
    if row is None or not row.total:
        return None
    return max(0, row.total - row.used)


def record(ctx: JobContext, ctid: int, exc: EngineError) -> None:
    """Diagnose ``exc`` and keep it with the job; never raises (the start's own error matters more)."""
    try:
        try:
            console = node_engine().console_log(ctid)
        except EngineError:
            console = b""
        found = diagnose(str(exc), getattr(exc, "step", None), console, _free_bytes(ctid))
        ctx.job.params = {**ctx.job.params, "diagnosis": found.as_dict()}
        Job.objects.filter(pk=ctx.job.pk).update(params=ctx.job.params)
        ctx.log(f"likely cause: {found.cause}")
        ctx.log(f"fix: {found.fix}")
    except Exception:  # noqa: BLE001 - a diagnosis that fails must not hide the start's error
        log.exception("diagnosis of CT %s's failed start", ctid)
