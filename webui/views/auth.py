"""Log in and out with Django's auth views; failed logins are limited (``webui.login_limits``).

A refused try (too many failures for the name, the address or its network) is answered 429 with the wait,
without checking the password.  Successes, failures and refusals are audited.
"""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.core.exceptions import ValidationError

from webui.login_limits import blocked_for, client_address, refusal
from webui.models import AuditEntry


def refused(request) -> str | None:
    """The refusal message for a POSTed login that is over its limits (audited), or None."""
    username, address = request.POST.get("username", ""), client_address(request)
    wait = blocked_for(username, address)
    if not wait:
        return None
    AuditEntry.objects.create(
        username=username[:150],
        action="login",
        address=address,
        outcome="denied",
        detail={"reason": "too many failed logins"},
    )
    return refusal(wait)


def refused_form(form_class, request, message: str):
    """The login form, bound to what was sent, showing ``message``: its password is never checked."""

    class Refused(form_class):
        def clean(self):
            raise ValidationError(message, code="throttled")

    return Refused(request, data=request.POST)


class LoginView(auth_views.LoginView):
    template_name = "webui/login.html"
    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        message = refused(request)
        if message:
            form = refused_form(self.get_form_class(), request, message)
            return self.render_to_response(self.get_context_data(form=form, throttled=True), status=429)
        return super().post(request, *args, **kwargs)

    def form_valid(self, form):
        response = super().form_valid(form)
        user = form.get_user()
        AuditEntry.objects.create(
            user=user, username=user.get_username(), action="login", address=client_address(self.request), outcome="ok"
        )
        return response


class LogoutView(auth_views.LogoutView):
    def post(self, request, *args, **kwargs):
        if request.user.is_authenticated:
            AuditEntry.objects.create(
                user=request.user,
                username=request.user.get_username(),
                action="logout",
                address=client_address(request),
                outcome="ok",
            )
        return super().post(request, *args, **kwargs)
