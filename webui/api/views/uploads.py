"""Template uploads (``webui.actions.uploads``): POST ``/api/nodes/<name>/templates/upload`` opens one
(``filename``, ``size``), PUT ``/api/uploads/<id>`` sends a chunk (raw body, ``Content-Range: bytes
FIRST-LAST/SIZE``) and answers once the node wrote it, GET tells where the node's file stands (the
offset to resume from, and its SHA-256 when complete).  A chunk not at the node's offset is 416 with it."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response

from webui.actions import uploads as actions
from webui.api.serializers.base import validated
from webui.api.serializers.storages import UploadOpenSerializer
from webui.api.views.base import ApiViewSet
from webui.models import Node


@extend_schema(tags=["nodes"])
class UploadViewSet(ApiViewSet):
    serializer_class = UploadOpenSerializer

    def create(self, request, name=None):
        node = get_object_or_404(Node, name=name)
        body = validated(UploadOpenSerializer, request.data)
        stream, job = actions.start(self.access, node, body.get("filename"), body.get("size"), address=self.address)
        location = f"/api/uploads/{stream}"
        body = {"upload": stream, "location": location, "offset": 0, "job": job.summary()}
        return Response(body, status=201, headers={"Location": location})

    def retrieve(self, request, upload=None):
        return Response(actions.status(self.access, upload))

    def update(self, request, upload=None):
        try:
            # The raw chunk from the stream (``body`` is capped by DATA_UPLOAD_MAX_MEMORY_SIZE; a chunk is checked
            # against the upload's own bound instead).
            data = request._request.read(actions.MAX_CHUNK + 1)  # noqa: SLF001
            return Response(actions.put(self.access, upload, request.headers.get("Content-Range", ""), data))
        except actions.RangeRefused as exc:
            body = {"error": {"status": 416, "message": str(exc)}, "offset": exc.offset}
            return Response(body, status=416, headers={"Range": f"bytes=0-{exc.offset - 1}"})
