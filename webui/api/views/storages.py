"""``/api/nodes/<name>/storage/``: a node's storages as its agent reports them (Datastore.Audit on each);
POST adds one, DELETE ``storage/<id>`` removes one (Sys.Modify on ``/``; 202 with the job)."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from webui.actions import storages as actions
from webui.api.views.base import ApiViewSet, accepted
from webui.models import Node, StorageMirror


@extend_schema(tags=["nodes"])
class StorageViewSet(ApiViewSet):
    def list(self, request, name=None):
        node = get_object_or_404(Node, name=name)
        rows = [s for s in StorageMirror.objects.filter(node=node) if self.access.can("Datastore.Audit", s)]
        keys = ("name", "type", "content", "total", "used", "enabled", "enforces_size")
        return Response([{k: getattr(s, k) for k in keys} for s in rows])

    def create(self, request, name=None):
        node = get_object_or_404(Node, name=name)
        if not isinstance(request.data, dict):
            raise ValidationError({"non_field_errors": ["a JSON object: storage, type, path, content"]})
        return accepted(actions.add_job(self.access, node, dict(request.data), address=self.address))

    def destroy(self, request, name=None, storage=None):
        node = get_object_or_404(Node, name=name)
        return accepted(actions.remove_job(self.access, node, storage, address=self.address))
