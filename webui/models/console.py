"""Console tickets: what lets one websocket open (or resume) one container's console, once."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

TICKET_SECONDS = 30


def ticket_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class ConsoleTicket(models.Model):
    """Made by a CSRF-checked POST from a user holding VM.Console; redeemed by the console websocket.

    Bound to the user, the container, the mode and (when resuming) the relay's session id;
    valid for ``TICKET_SECONDS`` and for one socket. Only the token's SHA-256 is stored.
    """

    class Mode(models.TextChoices):
        SHELL = "shell", "shell"
        TTY = "tty", "tty"
        CONSOLE = "console", "console"

    token_hash = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="console_tickets")
    container = models.ForeignKey("webui.Container", on_delete=models.CASCADE, related_name="console_tickets")
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.SHELL)
    session = models.CharField(max_length=32, blank=True)  # the session to resume; empty for a new one
    created = models.DateTimeField(default=timezone.now)
    expires = models.DateTimeField()
    used = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["expires"])]

    def __str__(self) -> str:
        return f"console ticket of {self.user} for CT {self.container.ctid} ({self.mode})"

    @classmethod
    def issue(cls, user, container, mode: str = "shell", session: str = "") -> tuple[ConsoleTicket, str]:
        """A new ticket and its token (shown once; only its hash is kept). Old tickets are swept here."""
        now = timezone.now()
        cls.objects.filter(expires__lt=now - timedelta(hours=1)).delete()
        token = secrets.token_urlsafe(32)
        ticket = cls.objects.create(
            token_hash=ticket_hash(token),
            user=user,
            container=container,
            mode=mode,
            session=session,
            created=now,
            expires=now + timedelta(seconds=TICKET_SECONDS),
        )
        return ticket, token

    @classmethod
    def find(cls, token: str) -> ConsoleTicket | None:
        if not token or len(token) > 128:
            return None
        return (
            cls.objects.select_related("container", "container__node", "container__pool", "user")
            .filter(token_hash=ticket_hash(token))
            .first()
        )

    def redeem(self) -> bool:
        """Mark used, atomically: of two sockets racing with one ticket, exactly one wins."""
        now = timezone.now()
        won = type(self).objects.filter(pk=self.pk, used__isnull=True, expires__gt=now).update(used=now)
        return won == 1
