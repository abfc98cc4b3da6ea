"""``/api/containers/<ctid>/``: suspend, resume, template, move_volume and files (as Proxmox's
``status/suspend``, ``status/resume``, ``template``, ``move_volume``; files are Caisson's, the API of
``pct push``/``pull``).  What each needs is in ``webui.actions.machine``."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser

from webui.actions import machine as actions
from webui.actions import migrate as migrations
from webui.api.serializers.base import validated
from webui.api.serializers.machine import MigrateSerializer, MoveVolumeSerializer, PullSerializer, PushSerializer
from webui.api.views.base import ACCEPTED, ApiViewSet, accepted
from webui.models import Container
from webui.views.machine import file_response


@extend_schema(tags=["containers"])
class ContainerMachineViewSet(ApiViewSet):
    queryset = Container.objects.select_related("node", "pool")
    lookup_field = "ctid"
    lookup_value_regex = r"[0-9]+"
    object_privileges = {
        "suspend": "VM.PowerMgmt",
        "resume": "VM.PowerMgmt",
        "template": "VM.Allocate",
        "move_volume": "VM.Config",
        "migrate": "VM.Migrate",
        "push": "VM.Config",
        "pull": "VM.Config",
        "pulled": "VM.Config",
    }

    def get_queryset(self):
        return self.access.visible_containers(super().get_queryset())

    @extend_schema(request=None, responses=ACCEPTED, description="Freeze every process of a running container.")
    @action(detail=True, methods=["post"], url_path="status/suspend")
    def suspend(self, request, ctid=None):
        return accepted(actions.suspend(self.access, self.get_object(), address=self.address))

    @extend_schema(request=None, responses=ACCEPTED, description="Thaw a suspended container.")
    @action(detail=True, methods=["post"], url_path="status/resume")
    def resume(self, request, ctid=None):
        return accepted(actions.resume(self.access, self.get_object(), address=self.address))

    @extend_schema(request=None, responses=ACCEPTED, description="Make a stopped container a template.")
    @action(detail=True, methods=["post"])
    def template(self, request, ctid=None):
        return accepted(actions.template(self.access, self.get_object(), address=self.address))

    @extend_schema(request=MoveVolumeSerializer, responses=ACCEPTED, description="Move a stopped container's volume.")
    @action(detail=True, methods=["post"], url_path="move_volume")
    def move_volume(self, request, ctid=None):
        body = validated(MoveVolumeSerializer, request.data)
        return accepted(
            actions.move_volume(
                self.access,
                self.get_object(),
                body["volume"],
                body["storage"],
                delete=body.get("delete", False),
                address=self.address,
            )
        )

    @extend_schema(
        request=MigrateSerializer,
        responses=ACCEPTED,
        description="Move the container to another node, as pct migrate: offline, or with restart (stop, move, "
        "start there).",
    )
    @action(detail=True, methods=["post"])
    def migrate(self, request, ctid=None):
        body = validated(MigrateSerializer, request.data)
        return accepted(
            migrations.migrate(
                self.access,
                self.get_object(),
                body["target"],
                restart=body.get("restart", False),
                online=body.get("online", False),
                address=self.address,
                drop_snapshots=body.get("drop_snapshots", False),
            )
        )

    @extend_schema(
        request={"multipart/form-data": PushSerializer},
        responses=ACCEPTED,
        description="Upload a file (form field 'file') into the running container with owner and mode.",
    )
    @action(detail=True, methods=["post"], url_path="files/push", parser_classes=[MultiPartParser, FormParser])
    def push(self, request, ctid=None):
        container = self.get_object()
        fields = {k: request.data.get(k) for k in ("path", "user", "group", "perms") if request.data.get(k)}
        body = validated(PushSerializer, fields)
        upload = request.FILES.get("file")
        if upload is None:
            from rest_framework.exceptions import ValidationError

            raise ValidationError({"file": ["a multipart field 'file' is required"]})
        return accepted(
            actions.push_file(
                self.access,
                container,
                upload.read(),
                body["path"],
                body.get("user"),
                body.get("group"),
                body.get("perms"),
                address=self.address,
            )
        )

    @extend_schema(
        request=PullSerializer, responses=ACCEPTED, description="Read a file; fetch it from files/pulled/<job>."
    )
    @action(detail=True, methods=["post"], url_path="files/pull", parser_classes=[JSONParser, FormParser])
    def pull(self, request, ctid=None):
        body = validated(PullSerializer, request.data)
        return accepted(actions.pull_file(self.access, self.get_object(), body["path"], address=self.address))

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"], url_path=r"files/pulled/(?P<job>[0-9]+)")
    def pulled(self, request, ctid=None, job=None):
        return file_response(actions.pulled(self.access, self.get_object(), int(job), address=self.address))
