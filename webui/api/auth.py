"""API tokens: ``Authorization: Token <user>!<name>=<secret>`` (Proxmox's PVEAPIToken shape).

Failures are counted per client address (``token_failure`` throttle rate);
past the rate every try is refused with 429 until the window has passed.
"""
from __future__ import annotations

import hmac
from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication, exceptions

from webui.api.throttling import TokenFailureThrottle

LAST_USED_PRECISION = timedelta(minutes=1)


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Token"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header.startswith(self.keyword + " "):
            return None
        throttle = TokenFailureThrottle()
        wait = throttle.blocked_for(request)
        if wait is not None:
            raise exceptions.Throttled(wait, detail="too many failed token authentications from this address")
        try:
            return self._check(header[len(self.keyword) + 1:].strip())
        except exceptions.AuthenticationFailed:
            throttle.failed(request)
            raise

    def _check(self, value: str):
        from webui.models import ApiToken

        user_part, sep, secret = value.partition("=")
        username, bang, name = user_part.partition("!")
        if not (sep and bang and username and name and secret):
            raise exceptions.AuthenticationFailed("malformed token: expected 'Token <user>!<name>=<secret>'")
        token = ApiToken.objects.select_related("user").filter(user__username=username, name=name).first()
        if token is None or not hmac.compare_digest(token.secret_hash, ApiToken.hash(secret)):
            raise exceptions.AuthenticationFailed("invalid API token")
        if token.expired:
            raise exceptions.AuthenticationFailed(f"API token {username}!{name} expired on {token.expires:%Y-%m-%d}")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed(f"user {username} is disabled")
        now = timezone.now()
        if token.last_used is None or now - token.last_used > LAST_USED_PRECISION:
            # A write per request would cost a commit each: the stamp is kept to the minute.
            ApiToken.objects.filter(pk=token.pk).update(last_used=now)
        return token.user, token

    def authenticate_header(self, request):
        return self.keyword
