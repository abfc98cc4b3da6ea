"""Console recordings (asciicast v2 files), the rules that ask for them, and read-only links to share one.

A rule names a container (every console opened on it is recorded, whoever opens it) or a user (every
console that user opens). The web tier's console consumer writes the recording as the output passes
through it (``webui.console.recording``): a user cannot turn it off from the terminal. Links keep only
the SHA-256 of their token, expire, and can be revoked.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import models
from django.utils import timezone

from webui.models.console import ticket_hash

MAX_SHARE_HOURS = 24 * 30


def recordings_dir() -> Path:
    path = Path(settings.DATA_DIR) / "recordings"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


class RecordingRule(models.Model):
    ctid = models.PositiveIntegerField(null=True, blank=True, db_column="vmid")  # this container's consoles ...
    user = models.ForeignKey(  # ... or this user's
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="recording_rules"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"CT {self.ctid}" if self.ctid is not None else f"user {self.user}"

    @classmethod
    def applies(cls, ctid: int, user_id: int) -> bool:
        return cls.objects.filter(models.Q(ctid=ctid) | models.Q(user_id=user_id)).exists()


class ConsoleRecording(models.Model):
    session = models.CharField(max_length=32, unique=True)  # the relay's session: a resumed one appends
    ctid = models.PositiveIntegerField(db_column="vmid")  # "ctid" is a PostgreSQL system column
    node = models.CharField(max_length=64)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    mode = models.CharField(max_length=8)
    started = models.DateTimeField(default=timezone.now)
    ended = models.DateTimeField(null=True, blank=True)
    size = models.BigIntegerField(default=0)  # bytes of terminal output recorded

    class Meta:
        ordering = ["-started"]

    def __str__(self) -> str:
        return f"console of CT {self.ctid} by {self.user} at {self.started:%Y-%m-%d %H:%M}"

    @property
    def path(self) -> Path:
        return recordings_dir() / f"{self.session}.cast"

    @property
    def ct_path(self) -> str:
        return f"/ct/{self.ctid}"


class RecordingShare(models.Model):
    recording = models.ForeignKey(ConsoleRecording, on_delete=models.CASCADE, related_name="shares")
    token_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created = models.DateTimeField(default=timezone.now)
    expires = models.DateTimeField()
    revoked = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    @property
    def active(self) -> bool:
        return self.revoked is None and self.expires > timezone.now()

    @classmethod
    def issue(cls, recording: ConsoleRecording, user, hours: int) -> tuple[RecordingShare, str]:
        token = secrets.token_urlsafe(32)
        share = cls.objects.create(
            recording=recording,
            token_hash=ticket_hash(token),
            created_by=user,
            expires=timezone.now() + timedelta(hours=hours),
        )
        return share, token

    @classmethod
    def find(cls, token: str) -> RecordingShare | None:
        """The live share of ``token``, or None (unknown, expired or revoked alike)."""
        if not token or len(token) > 128:
            return None
        share = cls.objects.select_related("recording").filter(token_hash=ticket_hash(token)).first()
        return share if share is not None and share.active else None
