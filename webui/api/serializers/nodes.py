"""Nodes and their metrics as the API shows them."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from webui.api.serializers.base import CharField, StrictSerializer
from webui.models import Node


class NodeSerializer(serializers.ModelSerializer):
    online = serializers.BooleanField(read_only=True)

    class Meta:
        model = Node
        fields = ["name", "address", "online", "last_seen", "cpus", "memory_total", "info"]


class AllowedBridgesSerializer(StrictSerializer):
    allowed = serializers.ListField(child=CharField(trim_whitespace=False), help_text="host bridges containers may use")


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


class StartAllSerializer(serializers.Serializer):
    vms = serializers.ListField(
        child=serializers.IntegerField(),
        required=False,
        help_text="only these containers (Proxmox's comma-separated string is taken too); "
        "VM.PowerMgmt on each, else on the node and all its containers",
    )
    force = serializers.BooleanField(required=False, help_text="start every stopped container, not only onboot ones")


class StopAllSerializer(serializers.Serializer):
    vms = serializers.ListField(child=serializers.IntegerField(), required=False, help_text="only these containers")
    timeout = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=7200,
        help_text="seconds per container whose startup sets no down (default 180)",
    )
    force_stop = serializers.BooleanField(required=False, help_text="stop hard after the timeout (default true)")
