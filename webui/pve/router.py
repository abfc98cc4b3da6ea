"""One view for ``/api2/<format>/<path>``: find the handler, authenticate, check CSRF, answer in Proxmox's
envelope.

Handlers register with ``@route(path, method, spec)``; a path's ``{name}`` parts become parameters checked
by the same ``spec`` as the query or body (Proxmox's schema treats them alike).  ``json`` answers
``{"data": ...}`` with the HTTP code; ``extjs`` answers 200 with ``success`` and the code in ``status``,
as the Proxmox web UI's format does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from webui.access import ACTING_TOKEN, Access, access_of_token
from webui.login_limits import client_address
from webui.pve import auth
from webui.pve.errors import PveError, translate
from webui.pve.schema import P, check

ROUTES: list[tuple[re.Pattern, str, Callable, bool]] = []


@dataclass
class Call:
    """What a handler gets: the caller's rights, where they called from, the raw parameters."""

    request: object
    access: Access
    address: str | None
    raw: dict
    path_values: dict

    def params(self, spec: dict[str, P]) -> dict:
        return check(self.raw, spec, self.path_values)


def route(path: str, method: str, public: bool = False):
    """Register ``handler(call) -> data`` for ``method`` on ``path`` (``{name}`` parts match one segment)."""
    pattern = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path.rstrip("/")) + "/?$")

    def register(handler):
        ROUTES.append((pattern, method, handler, public))
        return handler

    return register


def _resolve(method: str, path: str):
    for pattern, verb, handler, public in ROUTES:
        found = pattern.match(path)
        if found and verb == method:
            return handler, found.groupdict(), public
    raise PveError(501, f"Method '{method} {path}' not implemented")


def _raw_params(request) -> dict:
    raw = dict(parse_qsl(request.META.get("QUERY_STRING", ""), keep_blank_values=True))
    if request.method in ("POST", "PUT"):
        body = request.body.decode("utf-8", "replace")
        if request.content_type == "application/json" and body.strip():
            try:
                loaded = json.loads(body)
            except ValueError:
                loaded = None
            if not isinstance(loaded, dict):
                raise PveError(400, "Parameter verification failed.", {"body": "expected a JSON object"})
            raw.update(loaded)
        elif request.content_type == "multipart/form-data" and request.method == "POST":
            raw.update(request.POST.dict())
        else:
            raw.update(parse_qsl(body, keep_blank_values=True))
    return raw


def _authenticate(request, method: str) -> Access:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header.startswith("PVEAPIToken"):
        token = auth.token_of(header, request)  # no CSRF for tokens, as Proxmox
        request.auth, request.user = token, token.user
        ACTING_TOKEN.set(token)
        return access_of_token(token)
    ticket = request.COOKIES.get(auth.COOKIE)
    if not ticket and header.startswith(f"{auth.COOKIE}="):
        ticket = header.removeprefix(f"{auth.COOKIE}=")
    if not ticket:
        raise PveError(401, "No ticket")
    user = auth.check_ticket(ticket)
    if user is None:
        raise PveError(401, "invalid PVE ticket")
    if method != "GET" and not auth.check_csrf(request.META.get("HTTP_CSRFPREVENTIONTOKEN", ""), ticket, user):
        raise PveError(401, "Permission denied - invalid csrf token")
    request.user = user
    return Access(user)


def _answer(fmt: str, status: int, data, message: str = "", errors: dict | None = None) -> JsonResponse:
    body: dict = {"data": data}
    if errors:
        body["errors"] = errors
    if fmt == "extjs":
        body["success"] = 0 if status >= 400 else 1
        if status >= 400:
            body.update(message=message, status=status)
        status = 200
    elif status >= 400:
        body["message"] = message
    response = JsonResponse(body, status=status, json_dumps_params={"separators": (",", ":")})
    # Proxmox answers a missing config or a busy container with 500: a deliberate answer, not a server error
    # for Django's request log (refusals of rights are in the audit log).
    response._has_been_logged = True
    return response


def run(method: str, path: str, raw: dict, access: Access | None, request=None, address: str | None = None):
    """Run the handler of ``method path`` with ``raw`` parameters: ``(status, data, message, errors)``.

    ``access`` None: the request's own authentication (ticket or token); ``pvesh`` passes the node user's."""
    from webui.pve import views  # noqa: F401 - the handlers register themselves

    acting = ACTING_TOKEN.set(None)
    try:
        handler, path_values, public = _resolve(method, "/" + path.strip("/"))
        if access is None:
            access = Access(None) if public else _authenticate(request, method)
        return 200, handler(Call(request, access, address, raw, path_values)), "", {}
    except Exception as exc:  # noqa: BLE001 - every refusal becomes Proxmox's shape; anything else re-raises
        error = translate(exc)
        return error.status, None, error.message, error.errors
    finally:
        ACTING_TOKEN.reset(acting)


@csrf_exempt
def dispatch(request, fmt: str, path: str = ""):
    method = request.method if request.method != "HEAD" else "GET"
    try:
        raw = _raw_params(request)
    except PveError as error:
        return _answer(fmt, error.status, None, error.message, error.errors)
    status, data, message, errors = run(method, path, raw, None, request, client_address(request))
    return _answer(fmt, status, data, message, errors)
