"""A job's log (history as JSON for the task panel's viewer, or a page of its own) and cancelling it."""

from __future__ import annotations

from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_POST

from webui.access import access_for
from webui.actions import nodes as actions
from webui.consumers import can_see_job
from webui.models import Job
from webui.views.common import run_action


def _job(request, job_id: int) -> Job:
    job = get_object_or_404(Job.objects.select_related("node", "user"), pk=job_id)
    if not can_see_job(access_for(request), job):
        raise Http404(f"no job {job_id}")  # as for a job that does not exist: another user's jobs do not leak
    return job


def job_page(request, job_id: int):
    job = _job(request, job_id)
    lines = list(job.lines.order_by("seq").values("seq", "time", "text"))
    if request.headers.get("Accept", "").startswith("application/json"):
        return JsonResponse(
            {"job": job.summary(), "lines": [{**line, "time": line["time"].isoformat()} for line in lines]}
        )
    return render(request, "webui/job.html", {"job": job, "lines": lines, "page_subscribe": [f"job/{job.pk}"]})


@require_POST
def cancel(request, job_id: int):
    job = _job(request, job_id)

    def do():
        actions.cancel_job(access_for(request), job)
        job.refresh_from_db()
        return job

    return run_action(request, do, f"cancel of job {job_id} requested")
