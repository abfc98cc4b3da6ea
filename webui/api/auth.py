"""API tokens: ``Authorization: Token <user>!<name>=<secret>`` (Proxmox's PVEAPIToken shape).

Failures count with every other login path's (``webui.login_limits``: the token's user name, the client's
address and its network); past a limit every try is refused with 429 and the wait, even with a right secret,
until the window has passed.
"""

from __future__ import annotations

import hmac

from rest_framework import authentication, exceptions

from webui.login_limits import blocked_for, client_address, record_failure, refusal


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Token"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header.startswith(self.keyword + " "):
            return None
        value = header[len(self.keyword) + 1 :].strip()
        username, address = value.partition("!")[0], client_address(request)
        wait = blocked_for(username, address)
        if wait:
            raise exceptions.Throttled(wait, detail=f"failed token authentication: {refusal(wait)}")
        try:
            return self._check(value)
        except exceptions.AuthenticationFailed:
            record_failure(username, address)
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
        token.touch()
        return token.user, token

    def authenticate_header(self, request):
        return self.keyword
