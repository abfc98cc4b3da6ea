"""The API's exception handler: every refusal answered with ``webui.errors.error_body``.

Every exception a handler may let through is mapped here, and only here:
Django's ``PermissionDenied`` is 403, its ``ValidationError`` 400 with the
field errors in ``fields``, ``Http404`` 404, and ``JobRefused`` its own
status (409, or 503 for an offline node) with ``job``, the ID of the job
already doing the same thing, when there is one; DRF's own exceptions keep
their status, their field errors in ``fields``.
"""

from __future__ import annotations

from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_handler
from rest_framework.views import set_rollback

from webui.errors import error_body, message_of, refusal


def _text(detail) -> str:
    if isinstance(detail, dict):
        return message_of({k: _text(v) for k, v in detail.items()})
    if isinstance(detail, list):
        return " ".join(_text(v) for v in detail)
    return str(detail)


def exception_handler(exc, context):
    if not isinstance(exc, exceptions.APIException):
        answer = refusal(exc)
        if answer is not None:
            status, body = answer
            set_rollback()
            return Response(body, status=status)
    response = drf_handler(exc, context)
    if response is None:
        return None
    data = response.data
    if isinstance(data, dict) and "detail" in data:
        fields, message = {}, _text(data["detail"])
    else:
        fields = data if isinstance(data, dict) else {"non_field_errors": data}
        message = _text(fields)
    response.data = error_body(response.status_code, message, fields)
    return response
