"""Containers as the API shows them, and the bodies of their actions (strict: see ``base``)."""
from __future__ import annotations

from rest_framework import serializers

from webui.models import Container

# Named once for the schema's enums (settings.SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]).
CONTAINER_STATUS = Container.Status


LIST_FIELDS = ["ctid", "node", "pool", "hostname", "status", "unprivileged", "uptime", "init", "ipv4", "ipv6", "cpu",
               "memory_used", "memory_limit"]


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
        return {"ctid": c.ctid, "node": c.node.name, "pool": c.pool.name if c.pool_id else None,
                "hostname": c.hostname, "status": c.status, "unprivileged": c.unprivileged, "uptime": c.uptime,
                "init": c.init, "ipv4": c.ipv4, "ipv6": c.ipv6, "cpu": c.cpu, "memory_used": c.memory_used,
                "memory_limit": c.memory_limit}


def container_row(row: dict, now) -> dict:
    """What ``ContainerSerializer`` shows, from a ``values()`` row of the list's fields (``LIST_VALUES``)."""
    started = row["started_at"]
    uptime = max(0.0, (now - started).total_seconds()) if started and row["status"] == "running" else None
    return {"ctid": row["ctid"], "node": row["node__name"], "pool": row["pool__name"], "hostname": row["hostname"],
            "status": row["status"], "unprivileged": row["unprivileged"], "uptime": uptime, "init": row["init"],
            "ipv4": row["ipv4"], "ipv6": row["ipv6"], "cpu": row["cpu"], "memory_used": row["memory_used"],
            "memory_limit": row["memory_limit"]}


class ContainerDetailSerializer(ContainerSerializer):
    config = serializers.DictField(child=serializers.CharField(), read_only=True)
    protected = serializers.BooleanField(read_only=True)

    class Meta(ContainerSerializer.Meta):
        fields = [*LIST_FIELDS, "started_at", "updated_at", "protected", "config"]
        read_only_fields = fields

    def to_representation(self, c):
        return {**super().to_representation(c), "started_at": c.started_at.isoformat() if c.started_at else None,
                "updated_at": c.updated_at.isoformat(), "protected": c.protected, "config": c.config}


class ContainerCreateSerializer(serializers.Serializer):
    """The create wizard's fields (``webui/forms/create.py``); documented here, validated by the forms."""
    node = serializers.CharField()
    ctid = serializers.IntegerField(min_value=100, max_value=999_999_999)
    hostname = serializers.CharField()
    password = serializers.CharField(required=False, help_text="at least 5 characters; or give ssh_public_keys")
    password_confirm = serializers.CharField(required=False)
    ssh_public_keys = serializers.CharField(required=False)
    unprivileged = serializers.BooleanField(default=True)
    nesting = serializers.BooleanField(default=True)
    template = serializers.CharField(help_text="local:vztmpl/<name>, in the node's store")
    storage = serializers.CharField(default="local")
    disk_size = serializers.IntegerField(required=False, help_text="GiB; 0: no size. Default 8 where the storage "
                                                                   "enforces a size, none where it cannot (a size "
                                                                   "there is refused)")
    cores = serializers.IntegerField(required=False)
    cpulimit = serializers.FloatField(default=0)
    cpuunits = serializers.IntegerField(default=100)
    memory = serializers.IntegerField(default=512, help_text="MiB")
    swap = serializers.IntegerField(default=512, help_text="MiB")
    bridge = serializers.CharField(required=False, help_text="empty: no network interface")
    ipv4_mode = serializers.ChoiceField(choices=["none", "static", "dhcp"], default="dhcp")
    ipv4 = serializers.CharField(required=False, help_text="address/prefix, with ipv4_mode static")
    gw = serializers.CharField(required=False)
    ipv6_mode = serializers.ChoiceField(choices=["none", "static", "auto", "dhcp"], default="none")
    ipv6 = serializers.CharField(required=False)
    gw6 = serializers.CharField(required=False)
    tag = serializers.IntegerField(required=False, help_text="VLAN tag")
    rate = serializers.FloatField(required=False, help_text="MB/s")
    firewall = serializers.BooleanField(default=True)
    searchdomain = serializers.CharField(required=False)
    nameserver = serializers.CharField(required=False, help_text="space-separated addresses")
    start = serializers.BooleanField(default=False, help_text="start once created")


class ContainerConfigSerializer(serializers.Serializer):
    ctid = serializers.IntegerField()
    digest = serializers.CharField(help_text="give it back with a change to refuse it if the config changed since")
    config = serializers.DictField(child=serializers.CharField())


class ConfigChangeSerializer(serializers.Serializer):
    changes = serializers.DictField(child=serializers.JSONField(), required=False,
                                    help_text="config key -> new value (string or number)")
    delete = serializers.ListField(child=serializers.CharField(), required=False)
    digest = serializers.CharField(required=False, allow_null=True)


class PowerSerializer(serializers.Serializer):
    timeout = serializers.IntegerField(required=False, help_text="shutdown: seconds before giving up (1-3600)")
    force_stop = serializers.BooleanField(required=False, help_text="shutdown: stop hard after the timeout")


class SnapshotSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="a letter, then letters, digits, '_' or '-'; at most 40")
    description = serializers.CharField(required=False, allow_blank=True)


class CloneSerializer(serializers.Serializer):
    newid = serializers.IntegerField(help_text="the new container's ID (see next-id)")
    hostname = serializers.CharField(required=False, help_text="default: the source's")
    snapshot = serializers.CharField(required=False, allow_null=True, help_text="clone this snapshot (linked where "
                                                                                "the storage can)")
    full = serializers.BooleanField(required=False, help_text="copy all data even where a linked clone is possible")
    storage = serializers.CharField(required=False, allow_null=True, help_text="target storage (a full copy)")


class ResizeSerializer(serializers.Serializer):
    disk = serializers.CharField(help_text="rootfs or mpN")
    size = serializers.CharField(help_text="the new size (8G) or an increase (+2G); disks only grow")


class PoolAssignSerializer(serializers.Serializer):
    pool = serializers.CharField(allow_null=True, help_text="the pool's name, or null to take it out of its pool")
