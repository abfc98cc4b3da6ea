"""Pools as the API shows them."""

from __future__ import annotations

from rest_framework import serializers

from webui.api.serializers.base import CharField, StrictSerializer
from webui.models import Pool


class PoolSerializer(serializers.ModelSerializer):
    containers = serializers.SerializerMethodField()

    class Meta:
        model = Pool
        fields = ["name", "comment", "containers"]

    def get_containers(self, pool) -> list[int]:
        return sorted(c.ctid for c in pool.containers.all())


class PoolCreateSerializer(StrictSerializer):
    name = CharField(trim_whitespace=False, help_text="letters, digits, '_', '.', '-'")
    comment = CharField(trim_whitespace=False, required=False, allow_blank=True, default="")
