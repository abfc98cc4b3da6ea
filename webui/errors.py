"""One error body for every HTTP answer in JSON, the API's and the pages' alike.

``{"error": {"status": 409, "message": "...", "fields": {...}, "job": 12}}``:
``message`` is one readable line, ``fields`` the messages by field name
(``non_field_errors`` for those of no one field), ``job`` the ID of the job
already doing the same thing, or null.  Pages add what a page needs beside
these (``gone``: the container no longer exists; ``step``: the wizard's step
the fields belong to).  ``error_body`` builds it, and only it; the API's
exception handler and the pages' answers both call it.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, JsonResponse

from webui.models.queue import JobRefused

NON_FIELD = "non_field_errors"


def message_of(fields: dict) -> str:
    """One line from field errors: ``field: message; ...``, the non-field ones without a name."""
    parts = []
    for key, messages in fields.items():
        text = " ".join(str(m) for m in (messages if isinstance(messages, list | tuple) else [messages]))
        parts.append(text if key == NON_FIELD else f"{key}: {text}")
    return "; ".join(parts)


def error_body(status: int, message: str = "", fields: dict | None = None, job=None, **extra) -> dict:
    """The body of every JSON error answer; ``message`` defaults to the fields' line.  A form's ``__all__``
    is ``non_field_errors`` here, as DRF names it."""
    fields = {(NON_FIELD if key == "__all__" else key): messages for key, messages in (fields or {}).items()}
    body = {
        "status": status,
        "message": message or message_of(fields),
        "fields": fields,
        "job": getattr(job, "pk", job),
    }
    body.update(extra)
    return {"error": body}


def validation_fields(exc: ValidationError) -> dict[str, list[str]]:
    """A Django ``ValidationError``'s messages by field (``__all__`` and a bare message as non-field)."""
    if hasattr(exc, "error_dict"):
        return {
            (NON_FIELD if key == "__all__" else key): [str(m) for m in messages]
            for key, messages in exc.message_dict.items()
        }
    return {NON_FIELD: [str(m) for m in exc.messages]}


def refusal(exc: Exception) -> tuple[int, dict] | None:
    """The status and body for a refusal an action raises, or None for any other exception."""
    if isinstance(exc, ValidationError):
        return 400, error_body(400, fields=validation_fields(exc))
    if isinstance(exc, PermissionDenied):
        return 403, error_body(403, str(exc) or "permission denied")
    if isinstance(exc, Http404):
        return 404, error_body(404, str(exc) or "not found")
    if isinstance(exc, JobRefused):
        return exc.status, error_body(exc.status, str(exc), job=exc.job)
    return None


def error_response(status: int, message: str = "", fields: dict | None = None, job=None, **extra) -> JsonResponse:
    return JsonResponse(error_body(status, message, fields, job, **extra), status=status)


def refusal_response(exc: Exception) -> JsonResponse:
    status, body = refusal(exc)
    return JsonResponse(body, status=status)
