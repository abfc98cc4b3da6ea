"""Protection policies (Datacenter -> Protection): scheduled snapshots, the backup job, retention, notifications.

A ``ProtectionPolicy`` selects containers (all, a list, all but a list, a
pool's, or those carrying a tag) and protects them two ways:

- scheduled snapshots, with Incus's semantics (``snapshots.schedule``,
  ``snapshots.pattern``, ``snapshots.expiry``, ``snapshots.schedule.stopped``)
  and Proxmox's keep-* retention over the snapshots the policy took
  (``engine.autosnap``); the run is claimed by beat's check exactly as a
  backup job's is (``next_due``/``last_slot``, see ``webui.models.backups``);
- scheduled backups: its ``backup`` is a ``BackupSchedule`` (Proxmox's backup
  job, with its keep-* rules and its vzdump mail), whose container selection
  follows the policy's.  Backup jobs that existed before policies were each
  given a policy of their own by migration ``0011_policy_protection``: the
  job row, its beat task and its run history stay as they were.

Notifications go to ``NotificationTarget`` rows, as Proxmox's notification
system's targets: a mail target (addresses) or a webhook (an HTTP POST of a
JSON body to a URL), after each snapshot or backup run, always or on failure.
A webhook may carry secret headers (``Authorization: Bearer …``): their names
are kept in clear, their values only sealed (``webui.models.queue.seal_secret``,
a key derived from SECRET_KEY), opened by the node agent as it sends; no page,
API answer, audit entry or log shows a value back, only that one is set.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator, validate_email
from django.db import models, transaction
from django.utils import timezone

from webui.models.backups import KEEP_FIELDS, BackupArchive, BackupSchedule, parse_event, schedule_zone, sync_check_task
from webui.models.inventory import CTID_MAX, CTID_MIN, Container, Node, Pool

NAME = RegexValidator(r"^[A-Za-z][A-Za-z0-9\-_.]{0,63}$", "a letter, then letters, digits, '-', '_' or '.' (<= 64)")
TAG = r"^[a-z0-9_][a-z0-9_\-+.]{0,63}$"  # Proxmox's tag format
SNAP_KEEP_FIELDS = tuple(f"snap_{name}" for name in KEEP_FIELDS)
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")  # an HTTP token (RFC 9110)
RESERVED_HEADERS = {"content-type", "content-length", "host", "transfer-encoding", "connection"}
HEADERS_PURPOSE = b"caisson webhook headers"
MAX_HEADERS = 16


def tags_of(config: dict) -> set[str]:
    """A container's tags from its config (Proxmox separates them with ';', also ',' or spaces)."""
    return {t for t in str(config.get("tags", "")).replace(",", ";").replace(" ", ";").split(";") if t}


def header_lines(text: str) -> dict[str, str]:
    """A page's "Name: value" lines (one a line; "Name:" alone removes that header) as ``{name: value}``."""
    headers = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise ValidationError({"headers": [f"line {number}: 'Name: value' expected"]})
        headers[name.strip()] = value.strip()
    return headers


class NotificationTarget(models.Model):
    """Where a policy's run results go: a mail target or a webhook (Proxmox's notification targets)."""

    class Kind(models.TextChoices):
        MAIL = "mail", "mail"
        WEBHOOK = "webhook", "webhook"

    name = models.CharField(max_length=64, unique=True, validators=[NAME])
    kind = models.CharField(max_length=16, choices=Kind.choices)
    mail_to = models.CharField(max_length=512, blank=True, help_text="comma-separated addresses (mail)")
    url = models.CharField(max_length=1024, blank=True, help_text="http(s) URL the JSON is POSTed to (webhook)")
    enabled = models.BooleanField(default=True)
    comment = models.CharField(max_length=255, blank=True)
    header_names = models.JSONField(default=list, blank=True)  # the secret headers' names, in clear
    headers_sealed = models.TextField(blank=True)  # {name: value} as JSON, sealed; never shown back

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.kind} target {self.name}"

    def secret_headers(self) -> dict[str, str]:
        """The headers in clear, for the request only (the node agent's notification)."""
        from webui.models.queue import unseal_secret

        return json.loads(unseal_secret(self.headers_sealed, HEADERS_PURPOSE)) if self.headers_sealed else {}

    def update_headers(self, changes: dict) -> None:
        """Apply ``{name: value}`` (a value of None or "" removes that header); others stay as they are.

        Raises ValidationError naming the header (never its value) for a bad name or value."""
        from webui.models.queue import seal_secret

        if isinstance(changes, str):
            changes = header_lines(changes)
        if not isinstance(changes, dict):
            raise ValidationError({"headers": ["an object of header names to values"]})
        headers = self.secret_headers()
        for name, value in changes.items():
            if not isinstance(name, str) or not HEADER_NAME.match(name):
                raise ValidationError({"headers": [f"'{name}' is not an HTTP header name"]})
            if name.lower() in RESERVED_HEADERS:
                raise ValidationError({"headers": [f"header '{name}' is set by Caisson itself"]})
            for known in [k for k in headers if k.lower() == name.lower()]:
                del headers[known]
            if value is None or value == "":
                continue
            if not isinstance(value, str) or len(value) > 4096 or any(c in value for c in "\r\n\x00"):
                raise ValidationError(
                    {"headers": [f"header '{name}': a value is text of at most 4096 characters, on one line"]}
                )
            headers[name] = value
        if len(headers) > MAX_HEADERS:
            raise ValidationError({"headers": [f"at most {MAX_HEADERS} headers"]})
        self.header_names = sorted(headers)
        self.headers_sealed = seal_secret(json.dumps(headers), HEADERS_PURPOSE) if headers else ""

    @property
    def mail_list(self) -> list[str]:
        return [a.strip() for a in self.mail_to.split(",") if a.strip()]

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        if self.kind == self.Kind.MAIL:
            if not self.mail_list:
                errors["mail_to"] = ["a mail target needs at least one address"]
            for address in self.mail_list:
                try:
                    validate_email(address)
                except ValidationError:
                    errors.setdefault("mail_to", []).append(f"'{address}' is not an e-mail address")
            if self.url:
                errors["url"] = ["a mail target takes no URL"]
        elif self.kind == self.Kind.WEBHOOK:
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                errors["url"] = [f"'{self.url}' is not an http:// or https:// URL"]
            elif parts.username or parts.password:
                # The URL is shown on the page and in the API: no credentials in it.
                errors["url"] = ["the URL must not carry a user name or password"]
            if self.mail_to:
                errors["mail_to"] = ["a webhook target takes no addresses"]
        if self.kind != self.Kind.WEBHOOK and self.header_names:
            errors["headers"] = ["only a webhook target takes headers"]
        if errors:
            raise ValidationError(errors)


class ProtectionPolicy(models.Model):
    class Selection(models.TextChoices):
        ALL = "all", "all containers"
        INCLUDE = "include", "these containers"
        EXCLUDE = "exclude", "all but these containers"
        POOL = "pool", "the containers of a pool"
        TAG = "tag", "the containers with a tag"

    class NotifyWhen(models.TextChoices):
        ALWAYS = "always", "always"
        FAILURE = "failure", "on failure only"

    name = models.CharField(max_length=64, unique=True, validators=[NAME])
    enabled = models.BooleanField(default=True)
    comment = models.CharField(max_length=255, blank=True)
    selection = models.CharField(max_length=16, choices=Selection.choices, default=Selection.ALL)
    ctids = models.JSONField(default=list, blank=True)
    pool = models.ForeignKey(Pool, on_delete=models.PROTECT, null=True, blank=True, related_name="policies")
    tag = models.CharField(max_length=64, blank=True)
    snapshot_schedule = models.CharField(max_length=128, blank=True, help_text="calendar event; empty: none")
    snapshot_pattern = models.CharField(max_length=128, default="auto%d")
    snapshot_expiry = models.CharField(max_length=64, blank=True, help_text="e.g. '2d 12H'; empty: never")
    snapshot_stopped = models.BooleanField(default=False, help_text="also snapshot stopped containers")
    snap_keep_last = models.PositiveIntegerField(null=True, blank=True)
    snap_keep_hourly = models.PositiveIntegerField(null=True, blank=True)
    snap_keep_daily = models.PositiveIntegerField(null=True, blank=True)
    snap_keep_weekly = models.PositiveIntegerField(null=True, blank=True)
    snap_keep_monthly = models.PositiveIntegerField(null=True, blank=True)
    snap_keep_yearly = models.PositiveIntegerField(null=True, blank=True)
    backup = models.OneToOneField(
        BackupSchedule, on_delete=models.SET_NULL, null=True, blank=True, related_name="policy"
    )
    targets = models.ManyToManyField(NotificationTarget, blank=True, related_name="policies")
    notify_when = models.CharField(max_length=16, choices=NotifyWhen.choices, default=NotifyWhen.ALWAYS)
    # Restore tests (engine.backup.restoretest): after each backup run of the policy, and on demand.
    restore_test = models.BooleanField(default=False, help_text="restore-test the new archives after each backup run")
    restore_test_command = models.CharField(max_length=255, blank=True, help_text="run inside; must exit 0")
    restore_test_port = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    # Restore tests on a calendar of their own (claimed as the snapshots are), and where the throwaway sits.
    restore_test_schedule = models.CharField(max_length=128, blank=True, help_text="calendar event; empty: none")
    restore_test_network = models.CharField(
        max_length=16,
        choices=[("none", "no network"), ("isolated", "an isolated bridge (port checked from the host)")],
        default="none",
    )
    restore_test_next_due = models.DateTimeField(null=True, blank=True)
    restore_test_last_slot = models.DateTimeField(null=True, blank=True)
    next_due = models.DateTimeField(null=True, blank=True)  # the next snapshot run not claimed yet
    last_slot = models.DateTimeField(null=True, blank=True)
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask", on_delete=models.SET_NULL, null=True, blank=True, related_name="policy"
    )
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"policy {self.name}"

    @property
    def path(self) -> str:
        return "/"

    def snapshot_keep(self) -> dict[str, int]:
        """The snapshot keep-* rules that are set, as ``engine.backup.PruneOptions`` keywords."""
        return {n[5:]: getattr(self, n) for n in SNAP_KEEP_FIELDS if getattr(self, n) is not None}

    def clean(self) -> None:
        from engine.autosnap import check_pattern, parse_expiry
        from engine.errors import ValidationError as EngineValidationError

        errors: dict[str, list[str]] = {}
        for key in ("snapshot_schedule", "restore_test_schedule"):
            if getattr(self, key):
                try:
                    parse_event(getattr(self, key))
                except ValidationError as exc:
                    errors[key] = exc.message_dict["schedule"]
        for check, value, key in (
            (check_pattern, self.snapshot_pattern, "snapshot_pattern"),
            (parse_expiry, self.snapshot_expiry, "snapshot_expiry"),
        ):
            try:
                check(value)
            except EngineValidationError as exc:
                errors[key] = [str(exc)]
        if not isinstance(self.ctids, list) or not all(
            isinstance(c, int) and not isinstance(c, bool) and CTID_MIN <= c <= CTID_MAX for c in self.ctids
        ):
            errors["ctids"] = [f"a list of container IDs ({CTID_MIN}..{CTID_MAX})"]
        elif self.selection in (self.Selection.INCLUDE, self.Selection.EXCLUDE) and not self.ctids:
            errors["ctids"] = [f"selection '{self.selection}' needs at least one container ID"]
        elif self.selection not in (self.Selection.INCLUDE, self.Selection.EXCLUDE) and self.ctids:
            errors["ctids"] = [f"selection '{self.selection}' takes no container IDs"]
        if (self.selection == self.Selection.POOL) != (self.pool_id is not None):
            errors["pool"] = ["selection 'pool' needs a pool; other selections take none"]
        if self.restore_test_command:
            import shlex

            try:
                shlex.split(self.restore_test_command)
            except ValueError as exc:
                errors["restore_test_command"] = [f"'{self.restore_test_command}': {exc}"]
        if self.selection == self.Selection.TAG:
            import re

            if not re.match(TAG, self.tag or ""):
                errors["tag"] = [f"'{self.tag}' is not a tag (lower-case letters, digits, '_', '-', '+', '.')"]
        elif self.tag:
            errors["tag"] = [f"selection '{self.selection}' takes no tag"]
        if errors:
            raise ValidationError(errors)

    # ---- which containers ---------------------------------------------------------------------
    def selects(self, container: Container) -> bool:
        mode = self.selection
        if mode == self.Selection.ALL:
            return True
        if mode == self.Selection.INCLUDE:
            return container.ctid in self.ctids
        if mode == self.Selection.EXCLUDE:
            return container.ctid not in self.ctids
        if mode == self.Selection.POOL:
            return container.pool_id == self.pool_id
        return self.tag in tags_of(container.config)

    def containers(self, node: Node | None = None) -> list[Container]:
        found = Container.objects.exclude(status=Container.Status.CREATING)
        if node is not None:
            found = found.filter(node=node)
        return [c for c in found if self.selects(c)]

    def backup_selection(self) -> dict:
        """The policy's selection as its backup job's fields (``BackupSchedule`` knows tags too)."""
        return {"selection": self.selection, "ctids": list(self.ctids), "pool": self.pool, "tag": self.tag}

    # ---- beat ------------------------------------------------------------------------------------
    def rearm(self, after: datetime | None = None) -> None:
        """Set ``next_due`` and ``restore_test_next_due`` from the snapshot and restore test schedules (none: no
        such runs) and make beat's task match: one check per policy claims whichever is due."""
        moment = after or timezone.now()
        self.next_due = self.restore_test_next_due = None
        if self.snapshot_schedule:
            self.next_due = parse_event(self.snapshot_schedule).next_after(moment, schedule_zone())
        if self.restore_test_schedule:
            self.restore_test_next_due = parse_event(self.restore_test_schedule).next_after(moment, schedule_zone())
        self.save(update_fields=["next_due", "restore_test_next_due"])
        sync_check_task(
            self,
            task="caisson.protection.check",
            kwargs={"policy": self.pk},
            label=f"protection policy {self.pk}",
            description=f"policy {self.name}: snapshots {self.snapshot_schedule or 'never'}, "
            f"restore tests {self.restore_test_schedule or 'never'}",
            queue=self.home_queue(),
            due=self.next_due or self.restore_test_next_due,
        )

    def home_queue(self) -> str:
        from django.conf import settings

        nodes = list(Node.objects.all())
        chosen = ([n for n in nodes if n.online] or nodes or [None])[0]
        return chosen.queue if chosen else f"node.{settings.CAISSON_NODE}"

    def delete(self, *args, **kwargs):
        with transaction.atomic():
            task = self.periodic_task
            backup = BackupSchedule.objects.filter(pk=self.backup_id).first() if self.backup_id else None
            result = super().delete(*args, **kwargs)
            if task is not None:
                task.delete()
            if backup is not None:
                backup.delete()  # and its beat task; its runs stay in the task history
        return result

    def health_check(self) -> dict:
        """The restore test's checks, as ``engine.backup.restoretest.HealthCheck`` keywords."""
        import shlex

        return {
            "command": tuple(shlex.split(self.restore_test_command)),
            "port": self.restore_test_port,
            "network": self.restore_test_network,
        }

    def dispatch(
        self, slot: datetime | None = None, user=None, address: str | None = None, kind: str = "snapshotjob"
    ) -> list:
        """Queue one ``snapshotjob`` (or ``restoretest``) per node holding a selected container; refusals are
        audited, not raised."""
        from webui.models.access import AuditEntry
        from webui.models.queue import JobRefused, submit

        jobs = []
        nodes = Node.objects.filter(pk__in={c.node_id for c in self.containers()})
        for node in nodes:
            params = {"slot": slot.isoformat() if slot else None}
            try:
                jobs.append(submit(kind, node, "/", str(self.pk), user=user, params=params, address=address))
            except JobRefused as exc:
                AuditEntry.objects.create(
                    user=user if user is not None and user.is_authenticated else None,
                    username=getattr(user, "username", "") if user is not None else "",
                    action=kind,
                    path="/",
                    address=address,
                    outcome="refused",
                    detail={"policy": self.pk, "node": node.name, "message": str(exc)},
                )
        return jobs


class RestoreTest(models.Model):
    """One archive restored as a throwaway container, booted and checked (``engine.backup.restoretest``)."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="restore_tests")
    ctid = models.PositiveIntegerField(db_column="vmid")  # the container the archive is of
    storage = models.CharField(max_length=64)
    archive = models.CharField(max_length=255)
    policy = models.ForeignKey(ProtectionPolicy, on_delete=models.SET_NULL, null=True, blank=True)
    job = models.ForeignKey("webui.Job", on_delete=models.SET_NULL, null=True, blank=True)
    passed = models.BooleanField()
    reason = models.TextField(blank=True)
    timings = models.JSONField(default=dict, blank=True)  # step -> seconds
    log = models.TextField(blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["node", "storage", "archive"])]

    def __str__(self) -> str:
        return f"restore test of {self.archive}: {'passed' if self.passed else 'failed'}"

    @property
    def seconds(self) -> float:
        return round(sum(self.timings.values()), 2)

    @classmethod
    def annotate_proven(cls, archives):
        """``archives`` (a BackupArchive queryset) with ``proven``: when each last passed a restore test."""
        newest = cls.objects.filter(
            node_id=models.OuterRef("node_id"),
            storage=models.OuterRef("storage"),
            archive=models.OuterRef("name"),
            passed=True,
        ).order_by("-created")
        return archives.annotate(proven=models.Subquery(newest.values("created")[:1]))

    @classmethod
    def last_proven(cls, archive: BackupArchive):
        """When ``archive`` last passed a restore test (None: never)."""
        found = cls.objects.filter(
            node_id=archive.node_id, storage=archive.storage, archive=archive.name, passed=True
        ).first()
        return found.created if found else None
