"""A node's actions: its template store and catalog (download, build, remove, refresh); cancelling a job."""
from __future__ import annotations

from django.core.exceptions import PermissionDenied

from webui.access import Access, require
from webui.models import Job, Node
from webui.models.queue import cancel, submit


def template_job(access: Access, node: Node, kind: str, target: str, params: dict | None = None,
                 address: str | None = None) -> Job:
    """Download, build, remove a template, or refresh the catalog, on one node."""
    require(access, "Datastore.AllocateTemplate", node, address=address)
    return submit(kind, node, node.path, target, user=access.user, params=params or {}, address=address)


def cancel_job(access: Access, job: Job) -> None:
    """The job's owner, or anyone with Sys.Modify on the job's node, may cancel it."""
    if not (job.user_id == getattr(access.user, "id", None) or access.can("Sys.Modify", job.node)):
        raise PermissionDenied(f"permission denied: only the job's owner or Sys.Modify on {job.node.path} may "
                               "cancel it")
    cancel(job)
