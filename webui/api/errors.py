"""One error body for the whole API: ``{"error": {"status", "message", "fields"}}``.

Every exception a handler may let through is mapped here, and only here:
Django's ``PermissionDenied`` is 403, its ``ValidationError`` 400 with the
field errors in ``fields``, ``Http404`` 404, and ``JobRefused`` its own
status (409, or 503 for an offline node) with ``job``, the ID of the job
already doing the same thing, when there is one.
"""
from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions
from rest_framework.views import exception_handler as drf_handler

from webui.models.queue import JobRefused


class Refused(exceptions.APIException):
    """A ``JobRefused`` as DRF sees it."""

    def __init__(self, refused: JobRefused):
        super().__init__(detail=str(refused))
        self.status_code = refused.status


def _flatten(detail) -> str:
    if isinstance(detail, dict):
        return "; ".join(f"{k}: {_flatten(v)}" for k, v in detail.items())
    if isinstance(detail, list):
        return " ".join(_flatten(v) for v in detail)
    return str(detail)


def _fields(error: DjangoValidationError):
    if hasattr(error, "error_dict"):
        return {("non_field_errors" if key == "__all__" else key): messages
                for key, messages in error.message_dict.items()}
    return {"non_field_errors": error.messages}


def exception_handler(exc, context):
    job = None
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(detail=_fields(exc))
    elif isinstance(exc, JobRefused):
        job = exc.job
        exc = Refused(exc)
    response = drf_handler(exc, context)
    if response is None:
        return None
    data = response.data
    fields = data if isinstance(data, dict) and "detail" not in data else {}
    message = _flatten(data.get("detail")) if isinstance(data, dict) and "detail" in data else _flatten(data)
    response.data = {"error": {"status": response.status_code, "message": message, "fields": fields}}
    if job is not None:
        response.data["error"]["job"] = job.pk
    return response
