"""``/api/nodes/<name>/template-sources/``: a node's template sources with their last update, and changes.

GET needs Sys.Audit on ``/``; POST (add), PUT (type, url, enabled) and DELETE need Sys.Modify on ``/``
and answer 202 with the ``tmplsources`` job that applies the change on the node.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.response import Response

from webui.actions.template_sources import edit_sources
from webui.api.serializers.base import validated
from webui.api.serializers.jobs import JobAcceptedSerializer
from webui.api.serializers.templates import TemplateSourceAddSerializer, TemplateSourceChangeSerializer
from webui.api.views.base import ApiViewSet, accepted
from webui.models import Node, TemplateSource


class TemplateSourceSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="source_id")
    node = serializers.CharField(source="node.name")

    class Meta:
        model = TemplateSource
        fields = [
            "id",
            "node",
            "type",
            "url",
            "enabled",
            "signed",
            "last_attempt",
            "last_success",
            "last_error",
            "count",
            "news_headline",
            "news_text",
        ]


@extend_schema(tags=["nodes"])
class TemplateSourceViewSet(ApiViewSet):
    serializer_class = TemplateSourceSerializer

    def _node(self, name: str) -> Node:
        return get_object_or_404(Node, name=name)

    def list(self, request, name=None):
        if not self.access.can("Sys.Audit", None, "/"):
            raise PermissionDenied("permission denied: Sys.Audit on / is required")
        return self.paged(TemplateSource.objects.filter(node=self._node(name)).select_related("node"))

    def retrieve(self, request, name=None, source=None):
        if not self.access.can("Sys.Audit", None, "/"):
            raise PermissionDenied("permission denied: Sys.Audit on / is required")
        row = TemplateSource.objects.filter(node=self._node(name), source_id=source).first()
        if row is None:
            raise NotFound(f"no template source '{source}' on node {name}")
        return Response(TemplateSourceSerializer(row).data)

    @extend_schema(request=TemplateSourceAddSerializer, responses={202: JobAcceptedSerializer})
    def create(self, request, name=None):
        body = validated(TemplateSourceAddSerializer, request.data)
        source_id = body.pop("id")
        return accepted(edit_sources(self.access, self._node(name), "add", source_id, body, address=self.address))

    @extend_schema(request=TemplateSourceChangeSerializer, responses={202: JobAcceptedSerializer})
    def update(self, request, name=None, source=None):
        body = validated(TemplateSourceChangeSerializer, request.data)
        return accepted(edit_sources(self.access, self._node(name), "edit", source, body, address=self.address))

    def destroy(self, request, name=None, source=None):
        return accepted(edit_sources(self.access, self._node(name), "remove", source, address=self.address))
