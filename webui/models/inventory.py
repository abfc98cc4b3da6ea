"""Nodes and what lives on them, as last reported by each node's agent."""

from __future__ import annotations

import re
from datetime import timedelta

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models.functions import Now
from django.utils import timezone

from engine.config import BOUNDS

NODE_NAME = RegexValidator(
    r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
    "a node name is lower-case letters, digits and inner hyphens, at most 63 characters",
)
POOL_NAME = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
    "a pool name starts with a letter or digit and holds letters, digits, '_', '.', '-'",
)
CTID_MIN, CTID_MAX = BOUNDS["ctid"]  # Proxmox's range of guest IDs, as the engine checks it


UNKNOWN = "unknown"  # a container's shown status while its node is offline


def offline_cutoff():
    """A heartbeat older than this means its node is offline (``CAISSON_NODE_OFFLINE_AFTER``)."""
    return timezone.now() - timedelta(seconds=settings.CAISSON_NODE_OFFLINE_AFTER)


def is_online(last_seen) -> bool:
    return last_seen is not None and last_seen > offline_cutoff()


def shown_status(status: str, node_last_seen) -> str:
    """A container's status as lists show it: ``unknown`` while its node is offline, as Proxmox greys the
    guests of a node it cannot reach (the mirror's last word may be stale; the node's return resyncs it)."""
    return status if is_online(node_last_seen) else UNKNOWN


# How long a container has run, computed by the database for a list: an interval, where its start would come as a
# timestamp for Django's time-zone-aware loader, written in Python (a tenth of a 1,000-row page). NULL when never
# started; taken against the database's clock.
RUNNING_FOR = models.ExpressionWrapper(Now() - models.F("started_at"), output_field=models.DurationField())


class NodePresence:
    """Every node's name and whether it is online, read in one query for a list of containers.

    A list's rows then carry only their node's id: joining each row to its node's name and heartbeat
    decodes a timestamp and compares it with the offline limit once per container, about a tenth of the
    time of a 1,000-row page."""

    def __init__(self) -> None:
        cutoff = offline_cutoff()
        rows = list(Node.objects.values_list("pk", "name", "last_seen"))
        self.names = {pk: name for pk, name, _seen in rows}
        self.online = {pk for pk, _name, seen in rows if seen is not None and seen > cutoff}

    def status(self, status: str, node_id: int) -> str:
        """``shown_status`` for a container on the node ``node_id``."""
        return status if node_id in self.online else UNKNOWN


class Node(models.Model):
    name = models.CharField(max_length=63, unique=True, validators=[NODE_NAME])
    address = models.CharField(max_length=255, blank=True)
    last_seen = models.DateTimeField(null=True, blank=True)
    cpus = models.PositiveIntegerField(default=0)
    memory_total = models.BigIntegerField(default=0)
    info = models.JSONField(default=dict, blank=True)  # kernel, cgroup version, engine version, bridges
    # Host bridges an administrator (Sys.Modify on the node) lets containers' NICs use, beside the bridges the
    # node's interfaces file defines (see webui/nic_rights.py).
    allowed_bridges = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def online(self) -> bool:
        return is_online(self.last_seen)

    @property
    def queue(self) -> str:
        """The Celery queue this node's agent consumes: jobs run where their container lives."""
        return f"node.{self.name}"

    @property
    def tick_queue(self) -> str:
        """The queue of the node's tick, served by a worker of its own (``tasks.agent``): busy job slots must
        not hold back the heartbeat."""
        return tick_queue(self.name)

    @property
    def path(self) -> str:
        return f"/nodes/{self.name}"


class Pool(models.Model):
    """A named group of containers, granted access as one (Proxmox's resource pools)."""

    name = models.CharField(max_length=64, unique=True, validators=[POOL_NAME])
    comment = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def path(self) -> str:
        return f"/pool/{self.name}"


def tick_queue(node_name: str) -> str:
    return f"node.{node_name}.tick"


class Container(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running", "running"
        STOPPED = "stopped", "stopped"
        CREATING = "creating", "creating"  # a create job is under way; no config on the node yet
        UNKNOWN = "unknown", "unknown"  # its node has not reported it lately

    # "ctid" is a system column in PostgreSQL, hence Proxmox's "vmid" in the table.
    ctid = models.PositiveIntegerField(
        unique=True, db_column="vmid", validators=[MinValueValidator(CTID_MIN), MaxValueValidator(CTID_MAX)]
    )
    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="containers")
    pool = models.ForeignKey(Pool, on_delete=models.SET_NULL, null=True, blank=True, related_name="containers")
    hostname = models.CharField(max_length=253, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.UNKNOWN)
    paused = models.BooleanField(default=False)  # running but frozen by suspend (engine.suspend)
    unprivileged = models.BooleanField(default=True)
    config = models.JSONField(default=dict, blank=True)  # the node's pct config, key -> value
    digest = models.CharField(max_length=40, blank=True)  # SHA-1 of the config file, to refuse stale edits
    started_at = models.DateTimeField(null=True, blank=True)
    init = models.CharField(max_length=32, blank=True)
    snapshots = models.JSONField(default=list, blank=True)  # as listsnapshot gives them, "current" last
    os_release = models.JSONField(default=dict, blank=True)  # ID, VERSION_ID, PRETTY_NAME (engine.templates.eol)
    # The stored template it was created from (the wizard's), so its page can say when a newer one exists.
    source_template = models.CharField(max_length=255, blank=True)
    ipv4 = models.JSONField(default=list, blank=True)
    ipv6 = models.JSONField(default=list, blank=True)
    cpu = models.FloatField(null=True, blank=True)  # fraction of one CPU, last sample
    memory_used = models.BigIntegerField(null=True, blank=True)
    memory_limit = models.BigIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["ctid"]
        indexes = [models.Index(fields=["node", "ctid"])]

    def __str__(self) -> str:
        return f"CT {self.ctid} ({self.hostname})" if self.hostname else f"CT {self.ctid}"

    @property
    def path(self) -> str:
        return f"/ct/{self.ctid}"

    @property
    def uptime(self) -> float | None:
        if self.status != self.Status.RUNNING or not self.started_at:
            return None
        return max(0.0, (timezone.now() - self.started_at).total_seconds())

    @property
    def protected(self) -> bool:
        return str(self.config.get("protection", "0")) == "1"

    @property
    def tags(self) -> list[str]:
        return split_tags((self.config or {}).get("tags"))


def split_tags(raw) -> list[str]:
    """Proxmox's ``tags: a;b`` as a list (commas and spaces separate too, as pct accepts)."""
    return [t for t in re.split(r"[;,\s]+", str(raw or "")) if t]


class StorageMirror(models.Model):
    """A storage as its node reports it: type, content types, usage."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="storages")
    name = models.CharField(max_length=64)
    type = models.CharField(max_length=32)
    content = models.JSONField(default=list)
    total = models.BigIntegerField(default=0)
    used = models.BigIntegerField(default=0)
    enabled = models.BooleanField(default=True)
    # Whether a volume given a size here is held to it (engine.storage.Storage.enforces_size); where not,
    # the web tier sends no size and offers none.
    enforces_size = models.BooleanField(default=True)

    class Meta:
        ordering = ["node__name", "name"]
        constraints = [models.UniqueConstraint(fields=["node", "name"], name="storage_unique_per_node")]

    def __str__(self) -> str:
        return f"{self.name} on {self.node}"

    @property
    def path(self) -> str:
        return f"/storage/{self.name}"


class StoredTemplate(models.Model):
    """A template archive in a node's local store (``local:vztmpl/<name>``)."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="templates")
    name = models.CharField(max_length=255)
    size = models.BigIntegerField(default=0)
    modified = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["node", "name"], name="template_unique_per_node")]

    def __str__(self) -> str:
        return self.name

    @property
    def volid(self) -> str:
        return f"local:vztmpl/{self.name}"


class CatalogEntry(models.Model):
    """One template a catalog source offers (``pveam available``), as the node last read its index."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="catalog")
    source = models.CharField(max_length=64)
    section = models.CharField(max_length=64, blank=True)
    name = models.CharField(max_length=255)  # the archive name it is stored under
    os = models.CharField(max_length=64, blank=True)
    version = models.CharField(max_length=64, blank=True)
    headline = models.CharField(max_length=255, blank=True)  # the index's one-line summary
    description = models.TextField(blank=True)
    size = models.BigIntegerField(null=True, blank=True)
    trusted = models.BooleanField(default=False)
    buildable = models.BooleanField(default=False)  # made by a local builder rather than downloaded

    class Meta:
        ordering = ["section", "name"]
        constraints = [models.UniqueConstraint(fields=["node", "source", "name"], name="catalog_unique_entry")]

    def __str__(self) -> str:
        return f"{self.source}: {self.name}"
