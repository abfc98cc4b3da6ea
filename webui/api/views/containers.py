"""``/api/containers/``: list, detail, create, config, power, destroy, snapshots, clone, resize, pool, metrics.

Containers the user may not audit are not in the queryset at all (404);
what each action needs on a visible one is in ``object_privileges``.
"""

from __future__ import annotations

from django.db.models import Q
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from rest_framework.response import Response

from webui.actions import containers as actions
from webui.actions.pools import set_pool
from webui.api.serializers.base import validated
from webui.api.serializers.containers import (
    LIST_ANNOTATIONS,
    CloneSerializer,
    ConfigChangeSerializer,
    ContainerConfigSerializer,
    ContainerCreateSerializer,
    ContainerDetailSerializer,
    ContainerSerializer,
    PoolAssignSerializer,
    PowerSerializer,
    ResizeSerializer,
    SnapshotSerializer,
    container_row,
)
from webui.api.serializers.nodes import MetricsSerializer
from webui.api.views.base import ACCEPTED, ApiViewSet, accepted, flag_param, metrics
from webui.forms.create import propose_ctid
from webui.models import Container, Pool
from webui.models.inventory import NodePresence

LIST_VALUES = [
    "ctid",
    "node_id",
    "pool__name",
    "hostname",
    "status",
    "unprivileged",
    "init",
    "cpu",
    "memory_used",
    "memory_limit",
]
POWER_COMMANDS = list(actions.POWER_ACTIONS)
TIMEFRAME = OpenApiParameter("timeframe", str, enum=["hour", "day", "week"], default="hour")


@extend_schema(tags=["containers"])
class ContainerViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    queryset = Container.objects.select_related("node", "pool")
    serializer_class = ContainerSerializer
    lookup_field = "ctid"
    lookup_value_regex = r"[0-9]+"
    object_privileges = {
        "config:PUT": "VM.Config",
        "power": "VM.PowerMgmt",
        "destroy": "VM.Allocate",
        "snapshots:POST": "VM.Snapshot",
        "snapshot": "VM.Snapshot",
        "clone": "VM.Clone",
        "resize": "VM.Config",
    }

    def get_queryset(self):
        return self.access.visible_containers(super().get_queryset())

    def get_serializer_class(self):
        return ContainerDetailSerializer if self.action == "retrieve" else ContainerSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("node", str, description="node name"),
            OpenApiParameter("status", str, enum=[c for c, _ in Container.Status.choices]),
            OpenApiParameter("pool", str, description="pool name"),
            OpenApiParameter("search", str, description="part of the hostname, or the start of the ID"),
        ]
    )
    def list(self, request, *args, **kwargs):
        queryset = self.get_queryset()
        params = request.query_params
        if params.get("node"):
            queryset = queryset.filter(node__name=params["node"])
        if params.get("status"):
            queryset = queryset.filter(status=params["status"])
        if params.get("pool"):
            queryset = queryset.filter(pool__name=params["pool"])
        if params.get("search"):
            term = params["search"].strip()
            match = Q(hostname__icontains=term)
            if term.isdigit():
                match |= Q(ctid__startswith=term)
            queryset = queryset.filter(match)
        # Plain rows, not model instances: a page of 1,000 would otherwise build 3,000 objects.
        page = self.paginate_queryset(queryset.values(*LIST_VALUES, **LIST_ANNOTATIONS))
        nodes = NodePresence()
        return self.get_paginated_response([container_row(row, nodes) for row in page])

    @extend_schema(
        request=ContainerCreateSerializer,
        responses=ACCEPTED,
        description="Runs the create wizard's checks over the body and queues the create job.",
    )
    def create(self, request):
        data = validated(ContainerCreateSerializer, request.data)
        return accepted(actions.create_container(self.access, data, address=self.address))

    @extend_schema(responses=inline_serializer("NextId", {"ctid": serializers.IntegerField()}))
    @action(detail=False, methods=["get"], url_path="next-id")
    def next_id(self, request):
        return Response({"ctid": propose_ctid()})

    @extend_schema(methods=["GET"], responses=ContainerConfigSerializer)
    @extend_schema(
        methods=["PUT"],
        request=ConfigChangeSerializer,
        responses=ACCEPTED,
        description="Change or delete config keys; a 'digest' from GET refuses the change (409) if "
        "the config changed since.",
    )
    @action(detail=True, methods=["get", "put"])
    def config(self, request, ctid=None):
        container = self.get_object()
        if request.method == "GET":
            return Response({"ctid": container.ctid, "digest": container.digest, "config": container.config})
        body = validated(ConfigChangeSerializer, request.data)
        job = actions.update_config(
            self.access,
            container,
            body.get("changes") or {},
            body.get("delete") or [],
            body.get("digest") or None,
            address=self.address,
            risky=bool(body.get("risky")),
        )
        return accepted(job)

    @extend_schema(
        request=PowerSerializer,
        responses=ACCEPTED,
        parameters=[OpenApiParameter("command", str, OpenApiParameter.PATH, enum=POWER_COMMANDS)],
    )
    @action(detail=True, methods=["post"], url_path=r"status/(?P<command>start|shutdown|stop|reboot)")
    def power(self, request, ctid=None, command=None):
        container = self.get_object()
        params = validated(PowerSerializer, request.data) if request.data else {}
        return accepted(actions.power(self.access, container, command, params, address=self.address))

    @extend_schema(
        responses=ACCEPTED,
        parameters=[OpenApiParameter("force", OpenApiTypes.BOOL, description="stop it first if it is running")],
    )
    def destroy(self, request, ctid=None):
        container = self.get_object()
        force = flag_param(request, "force")
        return accepted(actions.destroy(self.access, container, force=force, address=self.address))

    @extend_schema(
        methods=["GET"],
        responses=inline_serializer("Snapshots", {"snapshots": serializers.ListField(child=serializers.DictField())}),
        description="The snapshot list as listsnapshot gives it: name, parent, snaptime, description; 'current' last.",
    )
    @extend_schema(
        methods=["POST"],
        request=SnapshotSerializer,
        responses=ACCEPTED,
        description="Take a snapshot; a running container is frozen for the instant it takes.",
    )
    @action(detail=True, methods=["get", "post"])
    def snapshots(self, request, ctid=None):
        container = self.get_object()
        if request.method == "GET":
            return Response({"snapshots": container.snapshots})
        body = validated(SnapshotSerializer, request.data)
        return accepted(
            actions.snapshot(
                self.access, container, "snapshot", body["name"], body.get("description", ""), address=self.address
            )
        )

    @extend_schema(
        request=None,
        responses=ACCEPTED,
        operation_id="containers_snapshot_operation",
        parameters=[
            OpenApiParameter("name", str, OpenApiParameter.PATH, description="the snapshot"),
            OpenApiParameter("operation", str, OpenApiParameter.PATH, enum=["rollback", "delete"]),
        ],
        description="Roll back to a snapshot (a running container is restarted) or delete it.",
    )
    @action(detail=True, methods=["post"], url_path=r"snapshots/(?P<name>[^/]+)/(?P<operation>rollback|delete)")
    def snapshot(self, request, ctid=None, name=None, operation=None):
        container = self.get_object()
        return accepted(actions.snapshot(self.access, container, operation, name, address=self.address))

    @extend_schema(
        request=CloneSerializer,
        responses=ACCEPTED,
        description="A new container from this one; linked from a snapshot where the storage can.",
    )
    @action(detail=True, methods=["post"])
    def clone(self, request, ctid=None):
        container = self.get_object()
        body = validated(CloneSerializer, request.data)
        return accepted(
            actions.clone(
                self.access,
                container,
                body["newid"],
                snapshot_name=body.get("snapshot"),
                full=body.get("full", False),
                storage=body.get("storage"),
                hostname=body.get("hostname"),
                address=self.address,
            )
        )

    @extend_schema(request=ResizeSerializer, responses=ACCEPTED)
    @action(detail=True, methods=["put"])
    def resize(self, request, ctid=None):
        container = self.get_object()
        body = validated(ResizeSerializer, request.data)
        return accepted(actions.resize(self.access, container, body["disk"], body["size"], address=self.address))

    @extend_schema(
        request=PoolAssignSerializer,
        responses=ContainerDetailSerializer,
        description="Move the container into a pool (Pool.Allocate on the pools it leaves and joins).",
    )
    @action(detail=True, methods=["put"])
    def pool(self, request, ctid=None):
        container = self.get_object()
        name = validated(PoolAssignSerializer, request.data).get("pool")
        target = None
        if name:
            target = Pool.objects.filter(name=name).first()
            if target is None or not self.access.can("Pool.Audit", target):  # an unseen pool does not exist
                raise serializers.ValidationError({"pool": [f"no pool '{name}'"]})
        set_pool(self.access, container, target, address=self.address)
        return Response(ContainerDetailSerializer(container).data)

    @extend_schema(responses=MetricsSerializer, parameters=[TIMEFRAME])
    @action(detail=True, methods=["get"])
    def metrics(self, request, ctid=None):
        container = self.get_object()
        return metrics(request, f"ct/{container.ctid}")
