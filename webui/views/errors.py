"""Django's own error answers: the layout's page with the reason, or the one JSON error body
(``webui.errors``) for the API's paths and ``fetch`` requests; never a stack trace."""

from __future__ import annotations

from django.shortcuts import render
from django.views import defaults
from django.views.csrf import csrf_failure as django_csrf_failure

from webui.errors import error_response


def _json(request) -> bool:
    return request.path.startswith("/api/") or request.headers.get("X-Requested-With") == "fetch"


def _answer(request, code: int, title: str, message: str):
    if _json(request):
        return error_response(code, message)
    return render(request, "webui/error.html", {"code": code, "title": title, "message": message}, status=code)


def bad_request(request, exception=None):
    if _json(request):
        return error_response(400, _message(exception) or "the request could not be read")
    return defaults.bad_request(request, exception)


def forbidden(request, exception=None):
    return _answer(request, 403, "Permission denied", str(exception or "") or "You may not do this.")


def not_found(request, exception=None):
    return _answer(request, 404, "Not found", _message(exception) or "There is nothing here.")


def server_error(request):
    """Django's plain page for a browser (the layout itself may be what failed)."""
    if _json(request):
        return error_response(500, "the server failed to answer; the error is in its log")
    return defaults.server_error(request)


def csrf_failure(request, reason=""):
    if _json(request):
        return error_response(403, f"CSRF verification failed: {reason}")
    return django_csrf_failure(request, reason)


def _message(exception) -> str:
    if exception is None:
        return ""
    args = getattr(exception, "args", ())
    if args and isinstance(args[0], str):
        return args[0]
    return ""
