"""A node's template store and catalog, and the bodies of its template jobs."""
from __future__ import annotations

from rest_framework import serializers

from engine import builders
from webui.models import CatalogEntry, StoredTemplate


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
