"""A node's template store and catalog, and the bodies of its template jobs."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from engine import builders
from webui.api.serializers.base import BooleanField, CharField, StrictSerializer
from webui.models import CatalogEntry, StoredTemplate


@extend_schema_field({"type": "string", "format": "date", "nullable": True})
class EolField(serializers.ReadOnlyField):
    """The end of support of the template's distribution release (``webui.eol``), or null when unknown."""

    def __init__(self, **kwargs):
        super().__init__(source="name", help_text="the release's end of support (YYYY-MM-DD), or null")

    def to_representation(self, name):
        from webui.eol import template_release

        found = template_release(name)
        return found.eol.isoformat() if found and found.eol else None


class StoredTemplateSerializer(serializers.ModelSerializer):
    volid = serializers.CharField(read_only=True)
    eol = EolField()

    class Meta:
        model = StoredTemplate
        fields = ["name", "volid", "size", "modified", "eol"]


class CatalogEntrySerializer(serializers.ModelSerializer):
    eol = EolField()

    class Meta:
        model = CatalogEntry
        fields = ["source", "section", "name", "os", "version", "description", "size", "trusted", "buildable", "eol"]


class DownloadSerializer(StrictSerializer):
    name = CharField(trim_whitespace=False, help_text="a template of the node's catalog (not a buildable one)")


class OciPullSerializer(StrictSerializer):
    reference = CharField(help_text="[registry[:port]/]repository[:tag|@sha256:<digest>]")
    name = CharField(required=False, allow_blank=True, help_text="the archive's name (default: Proxmox's)")
    username = CharField(required=False, allow_blank=True, help_text="for a private registry")
    password = CharField(
        required=False, allow_blank=True, trim_whitespace=False, write_only=True, help_text="never stored in clear"
    )
    abandon = BooleanField(
        required=False, default=False, help_text="drop what an interrupted pull of this image kept, instead of pulling"
    )


class RegistrySettingsSerializer(StrictSerializer):
    mirrors = serializers.DictField(
        child=serializers.ListField(child=CharField()),
        required=False,
        default=dict,
        help_text="registry -> its mirrors (host[:port][/path]), tried in order",
    )
    insecure = serializers.ListField(
        child=CharField(), required=False, default=list, help_text="host[:port]s reached over plain HTTP"
    )


class RegistryTagsSerializer(StrictSerializer):
    repository = CharField(help_text="[registry[:port]/]repository")
    username = CharField(required=False, allow_blank=True)
    password = CharField(required=False, allow_blank=True, trim_whitespace=False, write_only=True)


class BuildSerializer(StrictSerializer):
    builder = CharField(trim_whitespace=False, help_text=f"a local builder: {', '.join(builders.names())}")
    suite = CharField(trim_whitespace=False, required=False, help_text="debian: the release (e.g. bookworm)")
    packages = serializers.ListField(
        child=CharField(trim_whitespace=False), required=False, help_text="debian: extra packages"
    )


class CatalogUpdateSerializer(StrictSerializer):
    source = CharField(trim_whitespace=False, required=False, help_text="only this source (default: all)")


class TemplateSourceChangeSerializer(StrictSerializer):
    """A change to a template source; what the values mean is ``webui.actions.template_sources``'s to check."""

    type = CharField(trim_whitespace=False, required=False, help_text="one of engine.templates.sources.types()")
    url = CharField(trim_whitespace=False, required=False, help_text="the index's http(s) URL")
    enabled = BooleanField(required=False)


class TemplateSourceAddSerializer(TemplateSourceChangeSerializer):
    id = CharField(trim_whitespace=False, help_text="the source's name: letters, digits, '-', '_'")
