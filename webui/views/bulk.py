"""The container tables' bulk bar: one POST acts on every ticked container (``webui.actions.bulk``)."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import JsonResponse
from django.views.decorators.http import require_POST

from webui.access import access_for
from webui.actions.bulk import run_bulk
from webui.errors import refusal_response
from webui.views.common import back, client_address, wants_json

BACKUP_FIELDS = ("storage", "mode", "compress")


def summary_text(action: str, result: dict) -> str:
    parts = [f"{action}: {len(result['jobs'])} queued"]
    if result["skipped"]:
        parts.append(f"{len(result['skipped'])} already done (CT {', '.join(map(str, result['skipped']))})")
    if result["refused"]:
        parts.append(f"{len(result['refused'])} refused")
    return ", ".join(parts)


@require_POST
def bulk(request):
    action = request.POST.get("action", "")
    data = {k: request.POST[k] for k in BACKUP_FIELDS if request.POST.get(k)} if action == "backup" else {}
    if action in ("tag", "untag"):
        data["tags"] = request.POST.get("tags", "")
    try:
        result = run_bulk(
            access_for(request), action, request.POST.getlist("ctid"), data, address=client_address(request)
        )
    except ValidationError as exc:
        if wants_json(request):
            return refusal_response(exc)
        messages.error(request, "; ".join(exc.messages))
        return back(request)
    text = summary_text(action, result)
    if not wants_json(request):
        (messages.warning if result["refused"] else messages.success)(request, text)
        for ctid, reason in result["refused"].items():
            messages.error(request, f"CT {ctid}: {reason}")
        return back(request)
    return JsonResponse(
        {
            "message": text,
            "jobs": [job.summary() for job in result["jobs"]],
            "skipped": result["skipped"],
            "refused": {str(k): v for k, v in result["refused"].items()},
        },
        status=202 if result["jobs"] else 200,
    )
