"""What every page view shares: the client's address, access checks, and turning refusals into messages."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from webui.access import access_for
from webui.errors import error_response, refusal, refusal_response
from webui.login_limits import client_address
from webui.models import Container, Job
from webui.models.queue import JobRefused


def wants_json(request) -> bool:
    """``live.js`` sends forms with ``fetch`` and this header; plain form posts get a redirect instead."""
    return request.headers.get("X-Requested-With") == "fetch"


def back(request, default: str = "/") -> HttpResponseRedirect:
    target = request.POST.get("next") or request.headers.get("Referer") or default
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = default
    return HttpResponseRedirect(target)


def run_action(request, action, success: str, default_next: str = "/"):
    """Call one ``webui.actions`` function and answer the way the page asked (JSON or redirect + message).

    A refusal a user can act on becomes a message; ``PermissionDenied``
    becomes a 403 (the layout's 403 page, or JSON for ``fetch``).
    """
    try:
        job = action()
    except (PermissionDenied, ValidationError, JobRefused) as exc:
        if wants_json(request):
            return refusal_response(exc)
        if isinstance(exc, PermissionDenied):
            raise
        messages.error(request, refusal(exc)[1]["error"]["message"])
        return back(request, default_next)
    summary = job.summary() if isinstance(job, Job) else None
    text = success.format(job=job) if job is not None else success
    if wants_json(request):
        return JsonResponse({"message": text, "job": summary}, status=202 if summary else 200)
    messages.success(request, text)
    return back(request, default_next)


def object_action(request, obj, act, success: str, default_next: str):
    """``act(access, obj, address=...)`` on the object a URL named, answered as :func:`run_action` does.

    The delete and run-now buttons of schedules, policies and targets differ only in the action, the
    message and the page to go back to.  An action that starts a job on each node (a run now) reports the first.
    """

    def call():
        result = act(access_for(request), obj, address=client_address(request))
        return result[0] if isinstance(result, list) else result

    return run_action(request, call, success, default_next)


def save_action(request, save, data: dict, obj, success: str, default_next: str):
    """``save(access, data, obj, address=...)`` from a page's form, ``obj`` None for a new row; answered as
    :func:`run_action` does, with the message alone (the saved row is not a job to report)."""

    def call():
        save(access_for(request), data, obj, address=client_address(request))

    return run_action(request, call, success, default_next)


def container_action(request, ctid: int, act, success: str, tab: str | None = None):
    """``act(access, container, address)`` on the container of a page, back to its page (or its ``tab``).

    A container that is gone, or one the user may not see, answers as :func:`container_or_gone` says; a
    refusal or a queued job answers as :func:`run_action` does.
    """
    container, gone = container_or_gone(request, ctid)
    if gone:
        return gone
    return run_action(
        request,
        lambda: act(access_for(request), container, client_address(request)),
        success,
        reverse("ct-tab", args=[ctid, tab]) if tab else reverse("ct", args=[ctid]),
    )


def container_or_gone(request, ctid: int):
    """The container, or a clear answer when a stale page acts on one that no longer exists."""
    container = Container.objects.select_related("node", "pool").filter(ctid=ctid).first()
    if container is not None and access_for(request).can("VM.Audit", container):
        return container, None  # one the user may not see answers as one that does not exist: nothing leaks
    text = f"CT {ctid} no longer exists (it was destroyed or never created); the page you acted from was out of date"
    if wants_json(request):
        return None, error_response(404, text, gone=True)
    messages.error(request, text)
    return None, redirect("dashboard")


def audit_container(request, container: Container) -> None:
    """A container the user may not see is 404, as one that does not exist: its existence does not leak."""
    if not access_for(request).can("VM.Audit", container):
        raise Http404(f"CT {container.ctid} does not exist (it may have been destroyed)")
