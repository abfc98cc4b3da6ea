"""Join tokens: how a machine becomes a node of an existing Caisson.

An administrator makes a token (``manage.py node token`` or the API). Only its SHA-256 digest is stored,
with an expiry and the time it was used: a token joins one node, once, before it expires. The token also
unlocks the installation's shared secrets (the keys signing jobs and channel messages, the Redis password),
sealed at issue with a key derived from the token itself, which is never stored: the joining machine gets
them from the database, and nobody who reads the database without the token can.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from webui.models.inventory import NODE_NAME, Node

SHARED_SECRETS = ("secret_key", "channel.key", "celery.key", "celery.pem", "certs/celery.pem", "redis.password")
MAX_MINUTES = 7 * 24 * 60


class JoinRefused(Exception):
    """A token that cannot join a node, with the reason a person can act on."""


def _digest(token: str) -> str:
    return hashlib.sha256(b"caisson-join-id:" + token.encode()).hexdigest()


def _fernet(token: str):
    from cryptography.fernet import Fernet

    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"caisson-join-seal:" + token.encode()).digest()))


class JoinToken(models.Model):
    digest = models.CharField(max_length=64, unique=True)  # sha256 of the token; the token is shown once
    sealed = models.TextField()  # the shared secrets, encrypted with a key derived from the token
    created = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    expires = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    node_name = models.CharField(max_length=63, blank=True)  # the node it joined

    class Meta:
        ordering = ["-created"]

    @classmethod
    def issue(cls, shared: dict[str, str | None], user=None, minutes: int = 60) -> tuple[JoinToken, str]:
        """A new token valid ``minutes``, sealing ``shared`` (the secrets named in ``SHARED_SECRETS``);
        returns the row and the token, which is not kept anywhere."""
        if not 1 <= minutes <= MAX_MINUTES:
            raise ValueError(f"minutes must be between 1 and {MAX_MINUTES}")
        token = secrets.token_urlsafe(32)
        sealed = _fernet(token).encrypt(json.dumps(shared).encode()).decode()
        row = cls.objects.create(
            digest=_digest(token), sealed=sealed, created_by=user, expires=timezone.now() + timedelta(minutes=minutes)
        )
        return row, token

    @classmethod
    def redeem(cls, token: str, name: str) -> dict[str, str | None]:
        """Use ``token`` to join node ``name``: marks it used, registers the node, returns the shared secrets.

        Refused (``JoinRefused``, nothing changed) for an unknown, expired or used token, a bad name, or a
        name an online node already has."""
        from django.core.exceptions import ValidationError

        try:
            NODE_NAME(name)
        except ValidationError as exc:
            raise JoinRefused(f"bad node name '{name}': {exc.messages[0]}") from None
        with transaction.atomic():
            row = cls.objects.select_for_update().filter(digest=_digest(token.strip())).first()
            if row is None:
                raise JoinRefused("unknown join token (make one with 'manage.py node token')")
            if row.used_at is not None:
                raise JoinRefused(f"this join token was used already (by node '{row.node_name}')")
            if row.expires <= timezone.now():
                raise JoinRefused(f"this join token expired at {row.expires:%Y-%m-%d %H:%M:%S} UTC")
            existing = Node.objects.filter(name=name).first()
            if existing is not None and existing.online:
                raise JoinRefused(f"a node named '{name}' is online already; choose another name")
            row.used_at, row.node_name = timezone.now(), name
            row.save(update_fields=["used_at", "node_name"])
            Node.objects.get_or_create(name=name)
        return json.loads(_fernet(token.strip()).decrypt(row.sealed.encode()))


class NodeBusy(Exception):
    """A node that cannot be forgotten yet, and why."""


def forget_node(node: Node) -> None:
    """Remove a node that is gone: its row and mirrors, its job history, its queue's periodic tasks.

    Refused (``NodeBusy``, nothing changed) while the mirror still lists containers on it (their disks may
    still exist) or jobs are queued or running there. Used by an administrator's removal of a dead node and
    by a node leaving on its own (``run.sh leave``)."""
    from django_celery_beat.models import PeriodicTask

    from webui.models.inventory import Container
    from webui.models.jobs import Job

    with transaction.atomic():
        ctids = list(Container.objects.filter(node=node).values_list("ctid", flat=True)[:20])
        if ctids:
            raise NodeBusy(f"node '{node.name}' still has containers in the mirror: CT {', '.join(map(str, ctids))}")
        if Job.objects.filter(node=node, status__in=Job.ACTIVE).exists():
            raise NodeBusy(f"node '{node.name}' has queued or running jobs")
        PeriodicTask.objects.filter(queue__in=[node.queue, node.tick_queue]).delete()  # its tick, on either
        Job.objects.filter(node=node).delete()
        node.delete()
