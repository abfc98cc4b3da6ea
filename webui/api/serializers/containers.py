"""Containers as the API shows them, and the bodies of their actions (strict: see ``base``)."""

from __future__ import annotations

import json

from django.db.models import TextField
from django.db.models.functions import Cast
from rest_framework import serializers

from webui.api.serializers.base import (
    BooleanField,
    CharField,
    FloatField,
    IntegerField,
    StrictSerializer,
    form_serializer,
)
from webui.forms.create import STEP_FORMS
from webui.models import Container
from webui.models.inventory import RUNNING_FOR, NodePresence, shown_status

# Named once for the schema's enums (settings.SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]).
CONTAINER_STATUS = Container.Status


LIST_FIELDS = [
    "ctid",
    "node",
    "pool",
    "hostname",
    "status",
    "unprivileged",
    "uptime",
    "init",
    "ipv4",
    "ipv6",
    "cpu",
    "memory_used",
    "memory_limit",
]


class ContainerSerializer(serializers.ModelSerializer):
    node = serializers.CharField(source="node.name", read_only=True)
    pool = serializers.CharField(source="pool.name", read_only=True, allow_null=True, default=None)
    uptime = serializers.FloatField(read_only=True, allow_null=True, help_text="seconds, when running")
    ipv4 = serializers.ListField(child=serializers.CharField(), read_only=True)
    ipv6 = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = Container
        fields = LIST_FIELDS
        read_only_fields = LIST_FIELDS

    def to_representation(self, c):
        # Written out by hand: a list page of 1,000 rows must not pay DRF's per-field machinery.
        return {
            "ctid": c.ctid,
            "node": c.node.name,
            "pool": c.pool.name if c.pool_id else None,
            "hostname": c.hostname,
            "status": shown_status(c.status, c.node.last_seen),
            "unprivileged": c.unprivileged,
            "uptime": c.uptime if c.node.online else None,
            "init": c.init,
            "ipv4": c.ipv4,
            "ipv6": c.ipv6,
            "cpu": c.cpu,
            "memory_used": c.memory_used,
            "memory_limit": c.memory_limit,
        }


# What the list has the database compute: the address lists as their JSON text, decoded with the C scanner
# alone (a JSONField's converter with json.loads around each small value were a sixth of a 1,000-row page's
# time), and how long a container has run (RUNNING_FOR).
LIST_ANNOTATIONS = {
    "ipv4_json": Cast("ipv4", TextField()),
    "ipv6_json": Cast("ipv6", TextField()),
    "running_for": RUNNING_FOR,
}
_scan_json = json.JSONDecoder().scan_once


def _json_list(text: str | None) -> list:
    return _scan_json(text, 0)[0] if text else []


def container_row(row: dict, nodes: NodePresence) -> dict:
    """What ``ContainerSerializer`` shows, from a ``values()`` row of the list's fields and ``LIST_ANNOTATIONS``."""
    running_for, status = row["running_for"], nodes.status(row["status"], row["node_id"])
    uptime = max(0.0, running_for.total_seconds()) if running_for is not None and status == "running" else None
    return {
        "ctid": row["ctid"],
        "node": nodes.names[row["node_id"]],
        "pool": row["pool__name"],
        "hostname": row["hostname"],
        "status": status,
        "unprivileged": row["unprivileged"],
        "uptime": uptime,
        "init": row["init"],
        "ipv4": _json_list(row["ipv4_json"]),
        "ipv6": _json_list(row["ipv6_json"]),
        "cpu": row["cpu"],
        "memory_used": row["memory_used"],
        "memory_limit": row["memory_limit"],
    }


class ContainerDetailSerializer(ContainerSerializer):
    config = serializers.DictField(child=serializers.CharField(), read_only=True)
    protected = serializers.BooleanField(read_only=True)

    class Meta(ContainerSerializer.Meta):
        fields = [*LIST_FIELDS, "paused", "started_at", "updated_at", "protected", "config"]
        read_only_fields = fields

    def to_representation(self, c):
        return {
            **super().to_representation(c),
            "paused": c.paused,
            "started_at": c.started_at.isoformat() if c.started_at else None,
            "updated_at": c.updated_at.isoformat(),
            "protected": c.protected,
            "config": c.config,
        }


# The wizard ticks nesting for an unprivileged container, as Proxmox's does; the API, as Proxmox's, leaves
# it off unless asked (a privileged container cannot have it).
ContainerCreateSerializer = form_serializer(
    "ContainerCreateSerializer",
    STEP_FORMS.values(),
    {
        "nesting": BooleanField(
            required=False, default=False, help_text=STEP_FORMS["general"].base_fields["nesting"].help_text
        )
    },
)


class ContainerConfigSerializer(serializers.Serializer):
    ctid = serializers.IntegerField()
    digest = serializers.CharField(help_text="give it back with a change to refuse it if the config changed since")
    config = serializers.DictField(child=serializers.CharField())


class ConfigChangeSerializer(StrictSerializer):
    changes = serializers.DictField(
        child=serializers.JSONField(), required=False, help_text="config key -> new value (string or number)"
    )
    delete = serializers.ListField(child=CharField(), required=False)
    digest = CharField(required=False, help_text="the digest GET gave: refuses the change if the config changed")
    risky = serializers.BooleanField(
        required=False, help_text="take an expiring safety snapshot first (needs VM.Snapshot); the task offers rollback"
    )


class NumberField(FloatField):
    """A number, kept as given (an integer stays one; a form's "30" is 30)."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if isinstance(data, str):
            return int(value) if value.is_integer() else value
        return data


class PowerSerializer(StrictSerializer):
    timeout = NumberField(required=False, help_text="shutdown: seconds before giving up (1-3600)")
    force_stop = BooleanField(required=False, help_text="shutdown: stop hard after the timeout")


class SnapshotSerializer(StrictSerializer):
    name = CharField(help_text="a letter, then letters, digits, '_' or '-'; at most 40")
    description = CharField(required=False, allow_blank=True, trim_whitespace=False)


class CloneSerializer(StrictSerializer):
    newid = IntegerField(help_text="the new container's ID (see next-id)")
    hostname = CharField(required=False, help_text="default: the source's")
    snapshot = CharField(required=False, help_text="clone this snapshot (linked where the storage can)")
    full = BooleanField(required=False, help_text="copy all data even where a linked clone is possible")
    storage = CharField(required=False, help_text="target storage (a full copy)")


class ResizeSerializer(StrictSerializer):
    disk = CharField(help_text="rootfs or mpN")
    size = CharField(help_text="the new size (8G) or an increase (+2G); disks only grow")


class PoolAssignSerializer(StrictSerializer):
    pool = CharField(required=False, help_text="the pool's name; null or left out: out of its pool")
