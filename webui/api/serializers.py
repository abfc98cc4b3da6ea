"""How the API shows things.  Input is validated by the shared forms and actions, not here,
except for the access-control objects, which only the API edits."""
from __future__ import annotations

from django.contrib.auth.models import Group, User
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from engine import builders
from webui.models import (
    AccessEntry,
    ApiToken,
    AuditEntry,
    CatalogEntry,
    Container,
    Job,
    JobLine,
    Node,
    Pool,
    Role,
    StoredTemplate,
)
from webui.privileges import PRIVILEGES

# Named once for the schema's enums (settings.SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]).
CONTAINER_STATUS = Container.Status
JOB_STATUS = Job.Status

# ---- nodes and metrics ---------------------------------------------------------------------------


class NodeSerializer(serializers.ModelSerializer):
    online = serializers.BooleanField(read_only=True)

    class Meta:
        model = Node
        fields = ["name", "address", "online", "last_seen", "cpus", "memory_total", "info"]


class AllowedBridgesSerializer(serializers.Serializer):
    allowed = serializers.ListField(child=serializers.CharField(), help_text="host bridges containers may use")


class BridgesSerializer(AllowedBridgesSerializer):
    managed = serializers.ListField(child=serializers.DictField(), help_text="bridges the interfaces file defines")


class NodeMetricsSerializer(serializers.Serializer):
    ts = serializers.IntegerField()
    cpu = serializers.FloatField()
    memory = serializers.IntegerField()
    memory_total = serializers.IntegerField()
    disk_used = serializers.IntegerField()
    disk_total = serializers.IntegerField()


class NodeDetailSerializer(NodeSerializer):
    metrics = serializers.SerializerMethodField(help_text="the latest sample (10 s buckets), or null")
    containers = serializers.SerializerMethodField(help_text="how many containers the node holds")

    class Meta(NodeSerializer.Meta):
        fields = [*NodeSerializer.Meta.fields, "metrics", "containers"]

    @extend_schema_field(NodeMetricsSerializer(allow_null=True))
    def get_metrics(self, node):
        from webui.models import MetricSample

        step = MetricSample.RESOLUTIONS["hour"][0]
        row = MetricSample.objects.filter(scope=f"node/{node.name}", step=step).order_by("-ts").first()
        return NodeMetricsSerializer(row).data if row else None

    def get_containers(self, node) -> int:
        return node.containers.count()


class MetricsSerializer(serializers.Serializer):
    """One resolution's samples as parallel arrays, oldest first, ready for a chart."""
    timeframe = serializers.ChoiceField(choices=["hour", "day", "week"])
    step = serializers.IntegerField(help_text="bucket width in seconds")
    ts = serializers.ListField(child=serializers.IntegerField(), help_text="bucket starts, Unix seconds")
    cpu = serializers.ListField(child=serializers.FloatField())
    memory = serializers.ListField(child=serializers.IntegerField())
    memory_total = serializers.ListField(child=serializers.IntegerField())
    net_in = serializers.ListField(child=serializers.FloatField())
    net_out = serializers.ListField(child=serializers.FloatField())
    disk_used = serializers.ListField(child=serializers.IntegerField())
    disk_total = serializers.ListField(child=serializers.IntegerField())


# ---- containers -------------------------------------------------------------------------------------

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
    isolated_idmap = serializers.BooleanField(default=False, help_text="a 65536-id range of the container's own "
                                                                       "(lxc.idmap lines the node allocates); "
                                                                       "unprivileged containers only")
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


# ---- jobs ---------------------------------------------------------------------------------------------


class JobSerializer(serializers.ModelSerializer):
    upid = serializers.CharField(read_only=True)
    node = serializers.CharField(source="node.name", read_only=True)
    user = serializers.CharField(source="user.username", read_only=True, allow_null=True)

    class Meta:
        model = Job
        fields = ["id", "upid", "node", "kind", "target", "path", "user", "status", "progress", "progress_text",
                  "message", "created", "started", "ended"]
        read_only_fields = fields

    def to_representation(self, job):
        return job.summary()


class JobAcceptedSerializer(serializers.Serializer):
    job = JobSerializer()
    location = serializers.CharField(help_text="where to follow the job")


class JobLineSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobLine
        fields = ["seq", "time", "text"]


class JobLogSerializer(serializers.Serializer):
    job = serializers.IntegerField()
    status = serializers.CharField()
    lines = JobLineSerializer(many=True)
    next = serializers.IntegerField(help_text="the 'start' to ask for next")
    complete = serializers.BooleanField(help_text="the job has ended and every line was read")


# ---- templates ------------------------------------------------------------------------------------------


class StoredTemplateSerializer(serializers.ModelSerializer):
    volid = serializers.CharField(read_only=True)

    class Meta:
        model = StoredTemplate
        fields = ["name", "volid", "size", "modified"]


class CatalogEntrySerializer(serializers.ModelSerializer):
    class Meta:
        model = CatalogEntry
        fields = ["source", "section", "name", "os", "version", "description", "size", "trusted", "buildable"]


class DownloadSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="a template of the node's catalog (not a buildable one)")


class BuildSerializer(serializers.Serializer):
    builder = serializers.ChoiceField(choices=builders.names())
    suite = serializers.CharField(required=False, help_text="debian: the release (e.g. bookworm)")
    packages = serializers.ListField(child=serializers.CharField(), required=False,
                                     help_text="debian: extra packages")


class CatalogUpdateSerializer(serializers.Serializer):
    source = serializers.CharField(required=False, help_text="only this source (default: all)")


# ---- pools ------------------------------------------------------------------------------------------------


class PoolSerializer(serializers.ModelSerializer):
    containers = serializers.SerializerMethodField()

    class Meta:
        model = Pool
        fields = ["name", "comment", "containers"]

    def get_containers(self, pool) -> list[int]:
        return sorted(c.ctid for c in pool.containers.all())


# ---- access -------------------------------------------------------------------------------------------------


class AccessEntrySerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(slug_field="username", queryset=User.objects.all(), required=False,
                                        allow_null=True)
    group = serializers.SlugRelatedField(slug_field="name", queryset=Group.objects.all(), required=False,
                                         allow_null=True)
    role = serializers.SlugRelatedField(slug_field="name", queryset=Role.objects.all())

    class Meta:
        model = AccessEntry
        fields = ["id", "path", "user", "group", "role", "propagate"]

    def validate(self, attrs):
        if bool(attrs.get("user")) == bool(attrs.get("group")):
            raise serializers.ValidationError({"user": ["name exactly one user or one group"]})
        return attrs


class RoleSerializer(serializers.ModelSerializer):
    privileges = serializers.ListField(child=serializers.CharField())

    class Meta:
        model = Role
        fields = ["name", "privileges", "builtin"]
        read_only_fields = ["builtin"]

    def validate_privileges(self, value):
        unknown = sorted(set(value) - set(PRIVILEGES))
        if unknown:
            raise serializers.ValidationError(f"unknown privileges: {', '.join(unknown)}")
        return sorted(set(value))


class UserSerializer(serializers.ModelSerializer):
    password = serializers.CharField(write_only=True, required=False, min_length=8)
    groups = serializers.SlugRelatedField(slug_field="name", queryset=Group.objects.all(), many=True, required=False)

    class Meta:
        model = User
        fields = ["username", "email", "first_name", "last_name", "is_active", "is_superuser", "groups", "password",
                  "last_login", "date_joined"]
        read_only_fields = ["is_superuser", "last_login", "date_joined"]

    def create(self, validated):
        groups = validated.pop("groups", [])
        password = validated.pop("password", None)
        user = User(**validated)
        user.set_password(password) if password else user.set_unusable_password()
        user.save()
        user.groups.set(groups)
        return user

    def update(self, user, validated):
        password = validated.pop("password", None)
        if password:
            user.set_password(password)
        return super().update(user, validated)


class ApiTokenSerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiToken
        fields = ["name", "comment", "created", "expires", "last_used"]
        read_only_fields = ["created", "last_used"]


class ApiTokenIssuedSerializer(ApiTokenSerializer):
    value = serializers.CharField(read_only=True, help_text="the header value 'Token <value>'; shown only now")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "value"]


class PermissionsSerializer(serializers.Serializer):
    path = serializers.CharField()
    privileges = serializers.ListField(child=serializers.CharField())


class AuditEntrySerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEntry
        fields = ["id", "time", "username", "action", "path", "address", "outcome", "detail"]
