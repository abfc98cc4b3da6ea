"""One error body for the whole API: ``{"error": {"status", "message", "fields"}}``."""
from __future__ import annotations

from rest_framework.views import exception_handler as drf_handler


def _flatten(detail) -> str:
    if isinstance(detail, dict):
        return "; ".join(f"{k}: {_flatten(v)}" for k, v in detail.items())
    if isinstance(detail, list):
        return " ".join(_flatten(v) for v in detail)
    return str(detail)


def exception_handler(exc, context):
    response = drf_handler(exc, context)
    if response is None:
        return None
    data = response.data
    fields = data if isinstance(data, dict) and "detail" not in data else {}
    message = _flatten(data.get("detail")) if isinstance(data, dict) and "detail" in data else _flatten(data)
    response.data = {"error": {"status": response.status_code, "message": message, "fields": fields}}
    return response
