"""``/api/nodes/<name>/storage/``: a node's storages as its agent reports them (Datastore.Audit on each);
POST adds one, DELETE ``storage/<id>`` removes one (Sys.Modify on ``/``; 202 with the job)."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response

from webui.actions import storages as actions
from webui.api.serializers.base import validated
from webui.api.serializers.storages import StorageAddSerializer, StorageSerializer
from webui.api.views.base import ACCEPTED, ApiViewSet, accepted
from webui.models import Node, StorageMirror


@extend_schema(tags=["nodes"])
class StorageViewSet(ApiViewSet):
    serializer_class = StorageSerializer

    @extend_schema(responses=StorageSerializer(many=True))
    def list(self, request, name=None):
        node = get_object_or_404(Node, name=name)
        rows = [s for s in StorageMirror.objects.filter(node=node) if self.access.can("Datastore.Audit", s)]
        keys = ("name", "type", "content", "total", "used", "enabled", "enforces_size")
        return Response([{k: getattr(s, k) for k in keys} for s in rows])

    @extend_schema(request=StorageAddSerializer, responses=ACCEPTED)
    def create(self, request, name=None):
        node = get_object_or_404(Node, name=name)
        body = validated(StorageAddSerializer, request.data)
        return accepted(actions.add_job(self.access, node, body, address=self.address))

    @extend_schema(request=None, responses=ACCEPTED)
    def destroy(self, request, name=None, storage=None):
        node = get_object_or_404(Node, name=name)
        return accepted(actions.remove_job(self.access, node, storage, address=self.address))
