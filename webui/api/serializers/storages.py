"""A node's storages and template uploads: the JSON shapes the API takes and gives (the actions check
what the values mean: the storage's name, path and content by the engine's own rules)."""

from __future__ import annotations

from rest_framework import serializers

from webui.api.serializers.base import CharField, IntegerField, StrictSerializer


class StorageSerializer(serializers.Serializer):
    """A storage as the node's agent reports it."""

    name = serializers.CharField()
    type = serializers.CharField()
    content = serializers.ListField(child=serializers.CharField())
    total = serializers.IntegerField(allow_null=True)
    used = serializers.IntegerField(allow_null=True)
    enabled = serializers.BooleanField()
    enforces_size = serializers.BooleanField()


class StorageAddSerializer(StrictSerializer):
    storage = CharField(help_text="the storage's ID, as in Proxmox's storage.cfg")
    type = CharField(help_text="dir, btrfs or overlay")
    path = CharField(help_text="an absolute directory on the node")
    content = CharField(required=False, help_text="comma-separated content types (default: rootdir)")


class UploadOpenSerializer(StrictSerializer):
    filename = CharField(help_text="the template's file name in the store (e.g. debian-12-custom_amd64.tar.zst)")
    size = IntegerField(min_value=1, help_text="its size in bytes")
