"""``/nodes/{node}/tasks``: Caisson's jobs as Proxmox's tasks, named by their UPIDs (``webui.pve.upid``)."""

from __future__ import annotations

from webui.actions.nodes import cancel_job
from webui.api.views.jobs import visible_jobs
from webui.consumers import can_see_job
from webui.models import Job
from webui.pve.errors import PveError
from webui.pve.router import Call, route
from webui.pve.schema import NODE, P
from webui.pve.upid import job_of
from webui.userid import userid

UPID = P(optional=False, max_length=512)


def exitstatus(job: Job) -> str:
    """Proxmox's last word of a task: ``OK``, or its error message."""
    if job.status == Job.Status.OK:
        return "OK"
    return job.message or job.status


def task(job: Job) -> dict:
    fields = job.upid.split(":")
    row = {
        "upid": job.upid,
        "node": job.node.name,
        "pid": int(fields[2], 16),
        "pstart": int(fields[3], 16),
        "starttime": int(job.created.timestamp()),
        "type": job.kind,
        "id": job.target,
        "user": userid(job.user),
        "status": "running" if job.active else "stopped",
    }
    if not job.active:
        row["exitstatus"] = exitstatus(job)
        if job.ended:
            row["endtime"] = int(job.ended.timestamp())
    return row


@route("/nodes/{node}/tasks", "GET")
def task_list(call: Call):
    spec = {
        "node": NODE,
        "start": P("integer", minimum=0, default=0),
        "limit": P("integer", minimum=0, default=50),
        "vmid": P("integer", minimum=100),
        "typefilter": P(),
        "userfilter": P(),
        "errors": P("boolean"),
        "source": P(enum=("archive", "active", "all")),
        "since": P("integer"),
        "until": P("integer"),
        "statusfilter": P(),
    }
    params = call.params(spec)
    jobs = visible_jobs(call.access, Job.objects.select_related("node", "user").filter(node__name=params["node"]))
    if params.get("vmid") is not None:
        jobs = jobs.filter(path=f"/ct/{params['vmid']}")
    if params.get("typefilter"):
        jobs = jobs.filter(kind=params["typefilter"])
    if params.get("userfilter"):
        jobs = jobs.filter(user__username__icontains=params["userfilter"].partition("@")[0])
    if params.get("errors"):
        jobs = jobs.exclude(status=Job.Status.OK)
    if params.get("source") == "active":
        jobs = jobs.filter(status__in=Job.ACTIVE)
    start = params["start"]
    return [task(j) for j in jobs.order_by("-created", "-id")[start : start + params["limit"]]]


def _job(call: Call, params: dict) -> Job:
    job = job_of(params["upid"], params["node"])
    if job is None:
        raise PveError(400, f"unable to parse worker upid '{params['upid']}'")
    if not can_see_job(call.access, job):
        raise PveError(403, "Permission check failed")
    return job


@route("/nodes/{node}/tasks/{upid}", "GET")
def task_index(call: Call):
    _job(call, call.params({"node": NODE, "upid": UPID}))
    return [{"name": "log"}, {"name": "status"}]


@route("/nodes/{node}/tasks/{upid}/status", "GET")
def task_status(call: Call):
    return task(_job(call, call.params({"node": NODE, "upid": UPID})))


@route("/nodes/{node}/tasks/{upid}/log", "GET")
def task_log(call: Call):
    spec = {"node": NODE, "upid": UPID, "start": P("integer", minimum=0, default=0), "limit": P("integer", minimum=0)}
    params = call.params(spec)
    job = _job(call, params)
    lines = job.lines.order_by("seq").values_list("text", flat=True)
    start, limit = params["start"], params.get("limit") or 50
    return [{"n": start + i + 1, "t": text} for i, text in enumerate(lines[start : start + limit])]


@route("/nodes/{node}/tasks/{upid}", "DELETE")
def task_stop(call: Call):
    job = _job(call, call.params({"node": NODE, "upid": UPID}))
    cancel_job(call.access, job)
    return None
