"""API tokens: ``Authorization: Token <user>!<name>=<secret>`` (Proxmox's PVEAPIToken shape)."""
from __future__ import annotations

from django.utils import timezone
from rest_framework import authentication, exceptions


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Token"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header.startswith(self.keyword + " "):
            return None
        from webui.models import ApiToken

        value = header[len(self.keyword) + 1:].strip()
        user_part, sep, secret = value.partition("=")
        username, bang, name = user_part.partition("!")
        if not (sep and bang and username and name and secret):
            raise exceptions.AuthenticationFailed("malformed token: expected 'Token <user>!<name>=<secret>'")
        token = ApiToken.objects.select_related("user").filter(user__username=username, name=name).first()
        if token is None or token.secret_hash != ApiToken.hash(secret):
            raise exceptions.AuthenticationFailed("invalid API token")
        if token.expired:
            raise exceptions.AuthenticationFailed(f"API token {username}!{name} expired on {token.expires:%Y-%m-%d}")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed(f"user {username} is disabled")
        ApiToken.objects.filter(pk=token.pk).update(last_used=timezone.now())
        return token.user, token

    def authenticate_header(self, request):
        return self.keyword
