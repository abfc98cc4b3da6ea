"""The console page (a standalone terminal, for a pop-out window or the Console tab's frame), its tickets and Start.

``/ct/<ctid>/console/`` is the container page's Console tab; the terminal
itself lives at ``/ct/<ctid>/console/term/`` so that tab can frame it.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from webui import actions
from webui.access import access_for
from webui.console.tickets import container_cmode, mode_refusal
from webui.errors import error_response
from webui.models import AuditEntry, ConsoleTicket, Container
from webui.views.common import audit_container, client_address, container_or_gone, run_action

# "console" shows what the container's init writes (its stdout and stderr, kept in the node's console
# log), read-only: the engine does not attach a terminal to the container's /dev/console yet.
MODES = [("tty", "Login (tty)"), ("shell", "Shell"), ("console", "Console output (read-only)")]


def _container(ctid: int) -> Container:
    container = Container.objects.select_related("node", "pool").filter(ctid=ctid).first()
    if container is None:
        raise Http404(f"CT {ctid} does not exist (it may have been destroyed)")
    return container


def console_page(request, ctid: int):
    container = _container(ctid)
    audit_container(request, container)  # 404 for one the user may not see
    access = access_for(request)
    actions.require(access, "VM.Console", container, address=client_address(request))
    # Only the modes this user may open: the container's cmode, and the others with VM.Config.
    modes = [(value, label) for value, label in MODES if mode_refusal(access, container, value) is None]
    mode = request.GET.get("mode") or container_cmode(container)
    context = {
        "ct": container,
        "modes": modes,
        "mode": mode if mode in dict(modes) else container_cmode(container),
        "running": container.status == Container.Status.RUNNING,
        "can_start": access.can("VM.PowerMgmt", container),
        "grace": settings.CAISSON_CONSOLE_GRACE,
    }
    return render(request, "webui/console.html", context)


@require_POST
def ticket(request, ctid: int):
    """A single-use ticket for one console socket, valid a few seconds (CSRF-checked like every POST)."""
    container, gone = container_or_gone(request, ctid)
    if gone:
        return gone
    try:
        body = json.loads(request.body or b"{}") if request.content_type == "application/json" else request.POST
    except ValueError:
        return error_response(400, "the body is not JSON")
    mode, session = body.get("mode") or container_cmode(container), body.get("session") or ""
    if mode not in dict(MODES):
        return error_response(400, f"unknown mode '{str(mode)[:20]}' (use shell, tty or console)")
    if not isinstance(session, str) or (session and not (len(session) == 32 and session.isalnum())):
        return error_response(400, "malformed session id")
    access = access_for(request)
    try:
        actions.require(access, "VM.Console", container, address=client_address(request))
        refusal = mode_refusal(access, container, mode)
        if refusal:
            AuditEntry.objects.create(
                user=request.user,
                username=request.user.username,
                action="denied VM.Config",
                path=container.path,
                address=client_address(request),
                outcome="denied",
                detail={"console_mode": mode},
            )
            raise PermissionDenied(refusal)
    except PermissionDenied as exc:
        return error_response(403, str(exc))
    row, token = ConsoleTicket.issue(request.user, container, mode, session.lower())
    return JsonResponse(
        {
            "ticket": token,
            "expires": row.expires.isoformat(),
            "mode": mode,
            "session": row.session,
            "socket": f"/ws/console/{ctid}/",
            "status": container.status,
            "grace": settings.CAISSON_CONSOLE_GRACE,
        }
    )


@require_POST
def start(request, ctid: int):
    """Queue a start from the console's banner (the container page's Start action; JSON for ``fetch``)."""
    container, gone = container_or_gone(request, ctid)
    if gone:
        return gone
    return run_action(
        request,
        lambda: actions.power(access_for(request), container, "start", address=client_address(request)),
        f"start of CT {ctid} queued (job {{job.pk}})",
        f"/ct/{ctid}/console/term/",
    )
