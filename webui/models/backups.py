"""Backup jobs of the datacenter (Proxmox's Datacenter -> Backup) and the mirror of the nodes' archives.

A ``BackupSchedule`` owns one django-celery-beat ``PeriodicTask``, made,
changed and deleted with it in the same transaction.  That task does not
carry the calendar event (beat knows cron, not Proxmox's calendar events):
it fires ``caisson.backup.check`` every few seconds, and the check claims a
run only when ``next_due`` has passed, moving ``next_due`` to the event's
next time after *now* in the same row update.  So a second beat sending the
same check claims nothing, a clock jumping forward past several runs gives
one run, and a clock jumping back does not run a claimed time again.

``BackupArchive`` rows mirror each node's dump directories; the web tier
never reads a node's disk.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, validate_email
from django.db import models, transaction
from django.utils import timezone

from engine.backup import COMPRESSIONS as ENGINE_COMPRESSIONS
from engine.backup import MODES as BACKUP_MODES
from webui.models.inventory import CTID_MAX, CTID_MIN, Node, Pool

KEEP_FIELDS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
COMPRESSIONS = tuple(ENGINE_COMPRESSIONS)  # BACKUP_MODES and these: the engine's, in the order forms offer them
STORAGE_NAME = r"^[A-Za-z][A-Za-z0-9\-_.]{0,63}$"
MISSING = object()


def schedule_zone() -> ZoneInfo:
    """Calendar events are wall-clock times of the datacenter's time zone."""
    return ZoneInfo(getattr(settings, "CAISSON_BACKUP_TIME_ZONE", None) or settings.TIME_ZONE)


def parse_event(text: str):
    """The parsed event, or a Django ValidationError keyed ``schedule`` with the engine's message."""
    from engine.backup.schedule import parse_schedule
    from engine.errors import ValidationError as EngineValidationError

    try:
        return parse_schedule(text)
    except EngineValidationError as exc:
        raise ValidationError({"schedule": [str(exc)]}) from None


def next_runs(text: str, after: datetime, count: int = 5) -> list[datetime]:
    """The next ``count`` times the event fires after ``after`` (fewer if it ends)."""
    event = parse_event(text)
    runs: list[datetime] = []
    moment = after
    while len(runs) < count:
        found = event.next_after(moment, schedule_zone())
        if found is None:
            break
        runs.append(found)
        moment = found
    return runs


def sync_check_task(
    owner, task: str, kwargs: dict, label: str, description: str, queue: str, due: datetime | None = MISSING
) -> None:
    """Create or update the PeriodicTask that sends ``task`` every few seconds for ``owner`` (a model with
    ``enabled``, ``next_due`` and ``periodic_task``); call inside the transaction that saves the owner.
    ``due``: when the owner next has something to run, if not its ``next_due`` (None: nothing; beat idles)."""
    import json

    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    every = max(1, int(getattr(settings, "CAISSON_BACKUP_CHECK_INTERVAL", 30)))
    interval, _ = IntervalSchedule.objects.get_or_create(every=every, period=IntervalSchedule.SECONDS)
    fields = {
        "task": task,
        "interval": interval,
        "kwargs": json.dumps(kwargs),
        "queue": queue,
        "enabled": owner.enabled and (owner.next_due if due is MISSING else due) is not None,
        "expire_seconds": every,
        "description": description,
    }
    periodic = owner.periodic_task
    if periodic is None:
        periodic = PeriodicTask.objects.create(name=label, **fields)
        type(owner).objects.filter(pk=owner.pk).update(periodic_task=periodic)
        owner.periodic_task = periodic
        return
    for key, value in fields.items():
        setattr(periodic, key, value)
    periodic.save()  # save(), not update(): beat notices the change through PeriodicTasks


class BackupSchedule(models.Model):
    class Selection(models.TextChoices):
        ALL = "all", "all containers"
        INCLUDE = "include", "these containers"
        EXCLUDE = "exclude", "all but these containers"
        POOL = "pool", "the containers of a pool"
        TAG = "tag", "the containers with a tag"  # a protection policy's selection

    class MailWhen(models.TextChoices):
        ALWAYS = "always", "always"
        FAILURE = "failure", "on failure only"

    enabled = models.BooleanField(default=True)
    schedule = models.CharField(max_length=128, help_text="Proxmox calendar event (mon..fri 02:00) or cron line")
    selection = models.CharField(max_length=16, choices=Selection.choices, default=Selection.ALL)
    ctids = models.JSONField(default=list, blank=True)  # for include / exclude
    pool = models.ForeignKey(Pool, on_delete=models.PROTECT, null=True, blank=True, related_name="backup_schedules")
    tag = models.CharField(max_length=64, blank=True)  # for selection "tag"
    nodes = models.ManyToManyField(Node, blank=True, related_name="backup_schedules")  # none: every node
    storage = models.CharField(max_length=64, default="local")
    mode = models.CharField(max_length=16, choices=[(m, m) for m in BACKUP_MODES], default="snapshot")
    compress = models.CharField(max_length=8, choices=[(c, c) for c in COMPRESSIONS], default="zstd")
    keep_last = models.PositiveIntegerField(null=True, blank=True)
    keep_hourly = models.PositiveIntegerField(null=True, blank=True)
    keep_daily = models.PositiveIntegerField(null=True, blank=True)
    keep_weekly = models.PositiveIntegerField(null=True, blank=True)
    keep_monthly = models.PositiveIntegerField(null=True, blank=True)
    keep_yearly = models.PositiveIntegerField(null=True, blank=True)
    mail_to = models.CharField(max_length=512, blank=True, help_text="comma-separated addresses")
    mail_when = models.CharField(max_length=16, choices=MailWhen.choices, default=MailWhen.ALWAYS)
    notes = models.CharField(max_length=512, blank=True, default="{{guestname}}")
    comment = models.CharField(max_length=255, blank=True)
    next_due = models.DateTimeField(null=True, blank=True)  # the next run not claimed yet
    last_slot = models.DateTimeField(null=True, blank=True)  # the due time of the last run claimed
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="backup_schedule",
    )
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"backup job {self.pk} ({self.schedule})"

    @property
    def path(self) -> str:
        return "/"

    @property
    def mail_list(self) -> list[str]:
        return [a.strip() for a in self.mail_to.split(",") if a.strip()]

    def prune_options(self) -> dict[str, int]:
        """The keep-* rules that are set, as ``engine.backup.PruneOptions`` keywords."""
        return {name: getattr(self, name) for name in KEEP_FIELDS if getattr(self, name) is not None}

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        try:
            event = parse_event(self.schedule)
            if event.next_after(timezone.now(), schedule_zone()) is None:
                errors["schedule"] = [f"schedule '{self.schedule}' never fires again"]
        except ValidationError as exc:
            errors.update(exc.message_dict)
        if not isinstance(self.ctids, list) or not all(
            isinstance(c, int) and not isinstance(c, bool) and CTID_MIN <= c <= CTID_MAX for c in self.ctids
        ):
            errors["ctids"] = [f"a list of container IDs ({CTID_MIN}..{CTID_MAX})"]
        elif self.selection in (self.Selection.INCLUDE, self.Selection.EXCLUDE) and not self.ctids:
            errors["ctids"] = [f"selection '{self.selection}' needs at least one container ID"]
        elif self.selection in (self.Selection.ALL, self.Selection.POOL) and self.ctids:
            errors["ctids"] = [f"selection '{self.selection}' takes no container IDs"]
        if self.selection == self.Selection.POOL and self.pool_id is None:
            errors["pool"] = ["selection 'pool' needs a pool"]
        if self.selection != self.Selection.POOL and self.pool_id is not None:
            errors["pool"] = [f"selection '{self.selection}' takes no pool"]
        if (self.selection == self.Selection.TAG) != bool(self.tag):
            errors["tag"] = ["selection 'tag' needs a tag; other selections take none"]
        for address in self.mail_list:
            try:
                validate_email(address)
            except ValidationError:
                errors.setdefault("mail_to", []).append(f"'{address}' is not an e-mail address")
        if errors:
            raise ValidationError(errors)

    # ---- beat ----------------------------------------------------------------------------
    def rearm(self, after: datetime | None = None) -> None:
        """Set ``next_due`` from the event (after ``after``, default now) and make beat's task match."""
        event = parse_event(self.schedule)
        self.next_due = event.next_after(after or timezone.now(), schedule_zone())
        self.save(update_fields=["next_due"])
        self.sync_periodic_task()

    def sync_periodic_task(self) -> None:
        """Create or update this schedule's PeriodicTask; call inside the transaction that saves the schedule."""
        sync_check_task(
            self,
            task="caisson.backup.check",
            kwargs={"schedule": self.pk},
            label=f"backup job {self.pk}",
            description=f"backup job {self.pk}: {self.schedule}",
            queue=self.home_queue(),
        )

    def home_queue(self) -> str:
        """Where the check runs: an online node the job covers (any node can claim the run for all)."""
        candidates = list(self.nodes.all()) if self.pk else []
        if not candidates:
            candidates = list(Node.objects.all())
        online = [n for n in candidates if n.online]
        chosen = (online or candidates or [None])[0]
        return chosen.queue if chosen else f"node.{settings.CAISSON_NODE}"

    def delete(self, *args, **kwargs):
        with transaction.atomic():
            task = self.periodic_task
            result = super().delete(*args, **kwargs)
            if task is not None:
                task.delete()
        return result

    def covered_nodes(self) -> list[Node]:
        return list(self.nodes.all()) or list(Node.objects.all())

    # ---- runs: queued by "Run now" (webui.actions.schedules) and by beat's check (tasks.backup_jobs) ----
    def run_nodes(self) -> list[tuple[Node, bool, list[int]]]:
        """The nodes a run goes to: each with whether it reports listed containers that exist nowhere, and the
        listed containers the mirror puts on it (an error there if they are gone by the time it runs)."""
        from webui.models.inventory import Container

        nodes = self.covered_nodes()
        if self.selection == self.Selection.INCLUDE:
            where: dict[int, list[int]] = {}
            for ctid, node_id in Container.objects.filter(ctid__in=self.ctids).values_list("ctid", "node_id"):
                where.setdefault(node_id, []).append(ctid)
            chosen = [n for n in nodes if n.pk in where]
            unknown = sum(len(ids) for ids in where.values()) < len(self.ctids)
            if unknown and nodes and not chosen:
                chosen = [nodes[0]]
            return [(n, unknown and i == 0, sorted(where.get(n.pk, []))) for i, n in enumerate(chosen)]
        if self.selection == self.Selection.POOL:
            where_pool = set(Container.objects.filter(pool_id=self.pool_id).values_list("node_id", flat=True))
            return [(n, False, []) for n in nodes if n.pk in where_pool]
        if self.selection == self.Selection.TAG:
            where_tag = {c.node_id for c in self.tagged()}
            return [(n, False, []) for n in nodes if n.pk in where_tag]
        return [(n, False, []) for n in nodes]

    def tagged(self, node: Node | None = None) -> list:
        """The containers (of ``node``) carrying the job's tag, by the mirror of their configs."""
        from webui.models.inventory import Container
        from webui.models.protection import tags_of

        found = Container.objects.filter(node=node) if node is not None else Container.objects.all()
        return [c for c in found.only("ctid", "node_id", "config") if self.tag in tags_of(c.config)]

    def dispatch(self, slot: datetime | None = None, user=None, address: str | None = None) -> list:
        """Queue one ``vzdumpjob`` per node with containers to back up; refusals are audited, not raised."""
        from webui.models.access import AuditEntry
        from webui.models.queue import JobRefused, submit

        jobs = []
        for node, report_missing, expected in self.run_nodes():
            params = {
                "slot": slot.isoformat() if slot else None,
                "report_missing": report_missing,
                "expected": expected,
            }
            try:
                jobs.append(submit("vzdumpjob", node, "/", str(self.pk), user=user, params=params, address=address))
            except JobRefused as exc:
                username = getattr(user, "username", "") if user is not None else ""
                AuditEntry.objects.create(
                    user=user if user is not None and user.is_authenticated else None,
                    username=username,
                    action="vzdumpjob",
                    path="/",
                    address=address,
                    outcome="refused",
                    detail={"schedule": self.pk, "node": node.name, "message": str(exc)},
                )
        return jobs

    @classmethod
    def forget_container(cls, ctid: int) -> None:
        """A destroyed container (or a failed create's ID) leaves the backup jobs that list it, as Proxmox's
        destroy does: a job must not back up the next container given its ID.  A container that merely
        vanished from its node stays listed, so that the job's run reports it missing."""
        for schedule in cls.objects.filter(ctids__contains=[ctid]):
            schedule.ctids = [c for c in schedule.ctids if c != ctid]
            schedule.save(update_fields=["ctids"])


class BackupArchive(models.Model):
    """One archive in a node's dump directory, as the node last listed it."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="backup_archives")
    storage = models.CharField(max_length=64)
    ctid = models.PositiveIntegerField(
        db_column="vmid",  # "ctid" is a system column in PostgreSQL
        validators=[MinValueValidator(CTID_MIN), MaxValueValidator(CTID_MAX)],
    )
    name = models.CharField(max_length=255)
    time = models.DateTimeField()
    size = models.BigIntegerField(default=0)
    format = models.CharField(max_length=16)  # zstd, gzip, none
    protected = models.BooleanField(default=False)
    notes = models.TextField(blank=True)
    seen = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-time", "name"]
        constraints = [models.UniqueConstraint(fields=["node", "storage", "name"], name="backup_archive_unique")]
        indexes = [models.Index(fields=["ctid", "-time"])]

    def __str__(self) -> str:
        return self.volid

    @property
    def volid(self) -> str:
        """Proxmox's volume ID of a backup: ``local:backup/vzdump-lxc-100-....tar.zst``."""
        return f"{self.storage}:backup/{self.name}"

    @property
    def path(self) -> str:
        return f"/storage/{self.storage}"

    @property
    def age(self) -> timedelta:
        return timezone.now() - self.time
