"""Datacenter → Console recordings: the rules (record a container's or a user's consoles), the recordings an
auditor may see (Sys.Audit on the container), their replay and download, and read-only links to share one.

A shared link works without logging in, shows that one recording only, and stops at its expiry or when
revoked; its token is shown once, at creation (only its SHA-256 is kept).
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from webui.access import access_for, audit, require
from webui.errors import refusal_response
from webui.models import ConsoleRecording, RecordingRule, RecordingShare
from webui.models.recordings import MAX_SHARE_HOURS
from webui.views.common import client_address, run_action


def _may_audit(access, recording: ConsoleRecording) -> bool:
    return "Sys.Audit" in access.privileges(recording.ct_path)


def _recording(request, session: str) -> ConsoleRecording:
    """The recording, if the user may audit its container; one they may not see is 404, as a missing one."""
    recording = ConsoleRecording.objects.select_related("user").filter(session=session).first()
    if recording is None or not _may_audit(access_for(request), recording) or not recording.path.exists():
        raise Http404("no such console recording")
    return recording


def recordings_page(request):
    access = access_for(request)
    recordings = [r for r in ConsoleRecording.objects.select_related("user")[:500] if _may_audit(access, r)]
    return render(
        request,
        "webui/recordings.html",
        {
            "recordings": recordings,
            "rules": RecordingRule.objects.select_related("user", "created_by"),
            "can_modify": access.can("Sys.Modify", path="/"),
            "max_hours": MAX_SHARE_HOURS,
        },
    )


@require_POST
def rule_add(request):
    access = access_for(request)

    def act():
        require(access, "Sys.Modify", path="/", address=client_address(request))
        ctid, username = request.POST.get("ctid", "").strip(), request.POST.get("username", "").strip()
        if bool(ctid) == bool(username):
            raise ValidationError({"ctid": ["name either a container ID or a user"]})
        if ctid:
            if not ctid.isdigit():
                raise ValidationError({"ctid": [f"'{ctid}' is not a container ID"]})
            rule = RecordingRule.objects.create(ctid=int(ctid), created_by=request.user)
        else:
            user = get_user_model().objects.filter(username=username).first()
            if user is None:
                raise ValidationError({"username": [f"no user '{username}'"]})
            rule = RecordingRule.objects.create(user=user, created_by=request.user)
        audit(access, "recording.rule.add", "/", client_address(request), rule=str(rule))

    return run_action(request, act, "recording rule added", reverse("recordings"))


@require_POST
def rule_delete(request, pk: int):
    access = access_for(request)
    rule = get_object_or_404(RecordingRule, pk=pk)

    def act():
        require(access, "Sys.Modify", path="/", address=client_address(request))
        audit(access, "recording.rule.delete", "/", client_address(request), rule=str(rule))
        rule.delete()

    return run_action(request, act, "recording rule removed", reverse("recordings"))


def replay_page(request, session: str):
    recording = _recording(request, session)
    shares = recording.shares.all() if access_for(request).can("Sys.Audit", path=recording.ct_path) else []
    return render(
        request,
        "webui/replay.html",
        {"recording": recording, "cast_url": reverse("recording-cast", args=[session]), "shares": shares},
    )


def cast(request, session: str):
    recording = _recording(request, session)
    audit(access_for(request), "recording.download", recording.ct_path, client_address(request), session=session)
    return _cast_response(recording, request.GET.get("download") == "1")


def _cast_response(recording: ConsoleRecording, attachment: bool) -> FileResponse:
    name = f"ct{recording.ctid}-{recording.started:%Y%m%d-%H%M%S}.cast"
    response = FileResponse(
        recording.path.open("rb"), content_type="application/x-asciicast", as_attachment=attachment, filename=name
    )
    response["Cache-Control"] = "no-store"
    return response


@require_POST
def share(request, session: str):
    recording = _recording(request, session)
    try:
        hours = int(request.POST.get("hours", "24"))
    except ValueError:
        hours = 0
    if not 1 <= hours <= MAX_SHARE_HOURS:
        return refusal_response(ValidationError({"hours": [f"between 1 and {MAX_SHARE_HOURS} hours"]}))
    link, token = RecordingShare.issue(recording, request.user, hours)
    audit(access_for(request), "recording.share", recording.ct_path, client_address(request), share=link.pk)
    url = request.build_absolute_uri(reverse("shared-recording", args=[token]))
    return JsonResponse({"message": f"read-only link made, valid {hours} h", "url": url, "expires": link.expires})


@require_POST
def revoke(request, pk: int):
    link = get_object_or_404(RecordingShare.objects.select_related("recording"), pk=pk)
    access = access_for(request)
    if not _may_audit(access, link.recording):
        raise PermissionDenied("permission denied: Sys.Audit on the container is required")

    def act():
        RecordingShare.objects.filter(pk=link.pk).update(revoked=timezone.now())
        audit(access, "recording.unshare", link.recording.ct_path, client_address(request), share=link.pk)

    return run_action(request, act, "link revoked", reverse("recording", args=[link.recording.session]))


# ---- the shared link (no login) --------------------------------------------------------------------
def shared_page(request, token: str):
    link = RecordingShare.find(token)
    if link is None:
        raise Http404("this link has expired, was revoked, or never existed")
    return render(
        request,
        "webui/replay.html",
        {"recording": link.recording, "cast_url": reverse("shared-cast", args=[token]), "shared": link},
    )


def shared_cast(request, token: str):
    link = RecordingShare.find(token)
    if link is None or not link.recording.path.exists():
        raise Http404("this link has expired, was revoked, or never existed")
    return _cast_response(link.recording, False)
