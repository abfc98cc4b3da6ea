"""Who may do what, where: roles granted on paths, API tokens, and the audit log."""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from webui.privileges import PRIVILEGES, validate_path

TOKEN_NAME = RegexValidator(
    r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$", "a token name starts with a letter and holds letters, digits, '_', '.', '-'"
)


class Role(models.Model):
    """A named set of privileges (Proxmox's Administrator, PVEVMUser, PVEAuditor...)."""

    name = models.CharField(max_length=64, unique=True)
    privileges = models.JSONField(default=list)
    builtin = models.BooleanField(default=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        unknown = sorted(set(self.privileges) - set(PRIVILEGES))
        if unknown:
            raise ValidationError({"privileges": f"unknown privileges: {', '.join(unknown)}"})


class AccessEntry(models.Model):
    """One ACL line: a role for a user, a group or an API token on a path, inherited below it when ``propagate``.

    A token's own lines matter only when it is privilege-separated (``ApiToken.privsep``): it then holds what
    both its user and these lines grant, as Proxmox's ``user@realm!tokenid`` ACL entries.
    """

    path = models.CharField(max_length=255, validators=[validate_path])
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="access_entries"
    )
    group = models.ForeignKey(Group, on_delete=models.CASCADE, null=True, blank=True, related_name="access_entries")
    token = models.ForeignKey(
        "ApiToken", on_delete=models.CASCADE, null=True, blank=True, related_name="access_entries"
    )
    role = models.ForeignKey(Role, on_delete=models.CASCADE, related_name="entries")
    propagate = models.BooleanField(default=True)

    class Meta:
        ordering = ["path"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(user__isnull=False, group__isnull=True, token__isnull=True)
                | models.Q(user__isnull=True, group__isnull=False, token__isnull=True)
                | models.Q(user__isnull=True, group__isnull=True, token__isnull=False),
                name="access_entry_one_subject",
            ),
        ]

    def __str__(self) -> str:
        who = f"user {self.user}" if self.user_id else f"token {self.token}" if self.token_id else f"group {self.group}"
        return f"{self.path}: {self.role} for {who}"

    def clean(self) -> None:
        if [bool(self.user_id), bool(self.group_id), bool(self.token_id)].count(True) != 1:
            raise ValidationError("an access entry names exactly one user, one group or one API token")


class ApiToken(models.Model):
    """A named secret for scripts, sent as ``Authorization: Token <user>!<name>=<secret>`` (``/api/``) or
    ``Authorization: PVEAPIToken=<user>@pve!<name>=<secret>`` (``/api2/``).

    Only a hash of the secret is kept; the secret is shown once, when the token is made.  A
    privilege-separated token (``privsep``, Proxmox's default for new tokens) holds only what both its user
    and its own access entries grant; without it, the token acts with all its user's rights.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=64, validators=[TOKEN_NAME])
    secret_hash = models.CharField(max_length=64)
    comment = models.CharField(max_length=255, blank=True)
    created = models.DateTimeField(default=timezone.now)
    expires = models.DateTimeField(null=True, blank=True)
    last_used = models.DateTimeField(null=True, blank=True)
    privsep = models.BooleanField(default=False)

    class Meta:
        ordering = ["user", "name"]
        constraints = [models.UniqueConstraint(fields=["user", "name"], name="api_token_unique_name")]

    def __str__(self) -> str:
        return f"{self.user}!{self.name}"

    @staticmethod
    def hash(secret: str) -> str:
        return hashlib.sha256(secret.encode()).hexdigest()

    @classmethod
    def issue(cls, user, name: str, comment: str = "", expires=None, privsep: bool = False) -> tuple[ApiToken, str]:
        """Make a token and return it with the full header value, the only time the secret is seen."""
        secret = secrets.token_urlsafe(32)
        token = cls(
            user=user, name=name, comment=comment, expires=expires, secret_hash=cls.hash(secret), privsep=privsep
        )
        token.full_clean()
        token.save()
        return token, f"{user.username}!{name}={secret}"

    def touch(self) -> None:
        """Stamp ``last_used``, to the minute: a write per request would cost a commit each."""
        now = timezone.now()
        if self.last_used is None or (now - self.last_used).total_seconds() > 60:
            ApiToken.objects.filter(pk=self.pk).update(last_used=now)

    @property
    def expired(self) -> bool:
        return self.expires is not None and self.expires <= timezone.now()


class AuditEntry(models.Model):
    """Who did what, from where, and whether it was allowed."""

    time = models.DateTimeField(default=timezone.now, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    username = models.CharField(max_length=150, blank=True)  # kept when the user is deleted
    action = models.CharField(max_length=64)
    path = models.CharField(max_length=255, blank=True)
    address = models.GenericIPAddressField(null=True, blank=True)
    outcome = models.CharField(max_length=16, default="ok")  # ok, denied, failed
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-time", "-id"]

    def __str__(self) -> str:
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.username} {self.action} {self.path} {self.outcome}"
