"""403 and 404 in the layout, with the reason; never a stack trace."""
from __future__ import annotations

from django.shortcuts import render


def forbidden(request, exception=None):
    return render(request, "webui/error.html", {"code": 403, "title": "Permission denied",
                                                "message": str(exception or "") or "You may not do this."},
                  status=403)


def not_found(request, exception=None):
    return render(request, "webui/error.html", {"code": 404, "title": "Not found",
                                                "message": _message(exception) or "There is nothing here."},
                  status=404)


def _message(exception) -> str:
    if exception is None:
        return ""
    args = getattr(exception, "args", ())
    if args and isinstance(args[0], str):
        return args[0]
    return ""
