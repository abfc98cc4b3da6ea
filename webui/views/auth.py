"""Log in and out with Django's auth views, with failed logins throttled per user name and per address.

After ``LOGIN_FAILURE_LIMIT`` failures for a user name, or from an address,
within ``LOGIN_FAILURE_WINDOW`` seconds, further tries are refused (without
checking the password) until the window that began with the first failure
has passed.  The counters live in the shared cache so every web process
sees them.  Successes, failures and refusals are audited.
"""
from __future__ import annotations

import hashlib
import time

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.core.cache import cache

from webui.models import AuditEntry
from webui.views.common import client_address


def _keys(kind: str, value: str) -> tuple[str, str]:
    digest = hashlib.sha256(value.encode()).hexdigest()[:32]  # any user name fits a cache key
    return f"login-failures:{kind}:{digest}:count", f"login-failures:{kind}:{digest}:since"


def _scopes(username: str, address: str | None) -> list[tuple[str, str]]:
    scopes = [("user", username.strip().lower())] if username.strip() else []
    return scopes + ([("address", address)] if address else [])


def blocked_for(username: str, address: str | None) -> int:
    """Seconds until this user name and address may try again (0: they may now)."""
    wait = 0
    for kind, value in _scopes(username, address):
        count_key, since_key = _keys(kind, value)
        count, since = cache.get(count_key, 0), cache.get(since_key)
        if count >= settings.LOGIN_FAILURE_LIMIT and since is not None:
            wait = max(wait, int(since + settings.LOGIN_FAILURE_WINDOW - time.time()) + 1)
    return wait


def record_failure(username: str, address: str | None) -> None:
    window = settings.LOGIN_FAILURE_WINDOW
    for kind, value in _scopes(username, address):
        count_key, since_key = _keys(kind, value)
        cache.add(since_key, time.time(), window)  # the window starts with the first failure
        cache.add(count_key, 0, window)
        try:
            cache.incr(count_key)
        except ValueError:  # expired between add and incr
            cache.set(count_key, 1, window)


def clear_failures(username: str) -> None:
    cache.delete_many(list(_keys("user", username.strip().lower())))


class LoginView(auth_views.LoginView):
    template_name = "webui/login.html"
    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        username, address = request.POST.get("username", ""), client_address(request)
        wait = blocked_for(username, address)
        if wait:
            AuditEntry.objects.create(username=username[:150], action="login", address=address, outcome="denied",
                                      detail={"reason": "too many failed logins"})
            form = self.get_form()
            minutes = f"{wait // 60} min {wait % 60} s" if wait >= 60 else f"{wait} s"
            form.add_error(None, f"Too many failed logins for this user or from this address. Logins are refused "
                                 f"for {minutes}; try again after that.")
            return self.render_to_response(self.get_context_data(form=form, throttled=True), status=429)
        return super().post(request, *args, **kwargs)

    def form_valid(self, form):
        response = super().form_valid(form)
        user = form.get_user()
        clear_failures(user.get_username())
        AuditEntry.objects.create(user=user, username=user.get_username(), action="login",
                                  address=client_address(self.request), outcome="ok")
        return response

    def form_invalid(self, form):
        username, address = self.request.POST.get("username", ""), client_address(self.request)
        record_failure(username, address)
        AuditEntry.objects.create(username=username[:150], action="login", address=address, outcome="failed")
        return super().form_invalid(form)


class LogoutView(auth_views.LogoutView):
    def post(self, request, *args, **kwargs):
        if request.user.is_authenticated:
            AuditEntry.objects.create(user=request.user, username=request.user.get_username(), action="logout",
                                      address=client_address(request), outcome="ok")
        return super().post(request, *args, **kwargs)
