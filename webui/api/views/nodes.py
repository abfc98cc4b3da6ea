"""``/api/nodes/``: nodes, their metrics, their template store and catalog, template jobs, startall and stopall.

Every template change goes through ``actions.template_job`` (download,
tmplbuild, aptupdate, tmplremove), starting and stopping all containers
through ``actions.power_all_job``; each answers 202 with the job.
"""

from __future__ import annotations

from django.db.models import Q
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response

from engine import builders
from webui.actions import nodes as actions
from webui.api.serializers.base import validated
from webui.api.serializers.cluster import JoinTokenRequestSerializer, JoinTokenSerializer
from webui.api.serializers.nodes import (
    AllowedBridgesSerializer,
    BridgesSerializer,
    MetricsSerializer,
    NodeDetailSerializer,
    NodeSerializer,
    StartAllSerializer,
    StopAllSerializer,
)
from webui.api.serializers.templates import (
    BuildSerializer,
    CatalogEntrySerializer,
    CatalogUpdateSerializer,
    DownloadSerializer,
    OciPullSerializer,
    RegistrySettingsSerializer,
    RegistryTagsSerializer,
    StoredTemplateSerializer,
)
from webui.api.views.base import ACCEPTED, ApiViewSet, accepted, metrics
from webui.models import CatalogEntry, Node, StoredTemplate

TEMPLATE = OpenApiParameter("template", str, OpenApiParameter.PATH, description="the archive's name in the store")


@extend_schema(tags=["nodes"])
class NodeViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    queryset = Node.objects.all()
    serializer_class = NodeSerializer
    lookup_field = "name"
    lookup_value_regex = r"[a-z0-9-]+"
    object_privileges = {
        "metrics": "Sys.Audit",
        "templates": "Datastore.Audit",
        "catalog": "Datastore.Audit",
        "template_download": "Datastore.AllocateTemplate",
        "template_build": "Datastore.AllocateTemplate",
        "catalog_update": "Datastore.AllocateTemplate",
        "template_remove": "Datastore.AllocateTemplate",
        "bridges:PUT": "Sys.Modify",
    }
    path_privileges = {"remove": ("Sys.Modify", "/"), "join_token": ("Sys.Modify", "/")}

    def get_serializer_class(self):
        return NodeDetailSerializer if self.action == "retrieve" else NodeSerializer

    @extend_schema(
        request=AllowedBridgesSerializer,
        responses=BridgesSerializer,
        description="The bridges containers' NICs may use on this node: those its interfaces file defines "
        "(managed) and host bridges an administrator allowed; PUT replaces the allowed list "
        "(Sys.Modify on the node).",
    )
    @action(detail=True, methods=["get", "put"])
    def bridges(self, request, name=None):
        from webui.nic_rights import managed_bridges, set_allowed_bridges

        node = self.get_object()
        if request.method == "PUT":
            allowed = validated(AllowedBridgesSerializer, request.data)["allowed"]
            set_allowed_bridges(self.access, node, allowed, address=self.address)
        return Response({"managed": list(managed_bridges(node).values()), "allowed": node.allowed_bridges})

    @extend_schema(
        request=JoinTokenRequestSerializer,
        responses={201: JoinTokenSerializer},
        description="A single-use join token for a new node (scripts/run.sh join); Sys.Modify on /.",
    )
    @action(detail=False, methods=["post"], url_path="join-token")
    def join_token(self, request):
        from webui.actions.cluster import make_join_token

        minutes = validated(JoinTokenRequestSerializer, request.data)["minutes"]
        row, token = make_join_token(self.access, minutes, address=self.address)
        return Response(JoinTokenSerializer({"token": token, "expires": row.expires}).data, status=201)

    @extend_schema(
        request=None,
        responses={204: None},
        description="Forget a node that is gone: refused while it is online, has containers in the mirror or "
        "jobs queued or running; removes its periodic tick. Sys.Modify on /.",
    )
    @action(detail=True, methods=["post"])
    def remove(self, request, name=None):
        from webui.actions.cluster import remove_node

        remove_node(self.access, self.get_object(), address=self.address)
        return Response(status=204)

    @extend_schema(
        responses=MetricsSerializer,
        parameters=[OpenApiParameter("timeframe", str, enum=["hour", "day", "week"], default="hour")],
    )
    @action(detail=True, methods=["get"])
    def metrics(self, request, name=None):
        node = self.get_object()
        return metrics(request, f"node/{node.name}")

    @extend_schema(responses=StoredTemplateSerializer(many=True))
    @action(detail=True, methods=["get"], serializer_class=StoredTemplateSerializer)
    def templates(self, request, name=None):
        node = self.get_object()
        return self.paged(StoredTemplate.objects.filter(node=node), StoredTemplateSerializer)

    @extend_schema(
        responses=CatalogEntrySerializer(many=True),
        parameters=[
            OpenApiParameter("section", str, description="system, turnkeylinux, images, local, ..."),
            OpenApiParameter("search", str, description="part of the name, OS or description"),
        ],
    )
    @action(detail=True, methods=["get"], serializer_class=CatalogEntrySerializer)
    def catalog(self, request, name=None):
        node = self.get_object()
        queryset = CatalogEntry.objects.filter(node=node)
        if request.query_params.get("section"):
            queryset = queryset.filter(section=request.query_params["section"])
        term = request.query_params.get("search", "").strip()
        if term:
            queryset = queryset.filter(Q(name__icontains=term) | Q(os__icontains=term) | Q(description__icontains=term))
        return self.paged(queryset, CatalogEntrySerializer)

    @extend_schema(request=DownloadSerializer, responses=ACCEPTED)
    @action(detail=True, methods=["post"], url_path="templates/download")
    def template_download(self, request, name=None):
        node = self.get_object()
        body = validated(DownloadSerializer, request.data)
        entry = CatalogEntry.objects.filter(node=node, name=body["name"]).first()
        if entry is None:
            raise ValidationError({"name": [f"'{body['name']}' is not in the catalog of node '{node.name}'"]})
        if entry.buildable:
            raise ValidationError({"name": [f"'{entry.name}' is made by a local builder: build it instead"]})
        job = actions.template_job(
            self.access, node, "download", entry.name, {"source": entry.source}, address=self.address
        )
        return accepted(job)

    @extend_schema(
        request=OciPullSerializer,
        responses=ACCEPTED,
        description="Pull an OCI image from a registry into the node's store as <name>.tar (Proxmox's "
        "oci-registry-pull); the password is sealed for the node agent, never stored in clear.",
    )
    @action(detail=True, methods=["post"], url_path="templates/pull")
    def template_pull(self, request, name=None):
        node = self.get_object()
        body = validated(OciPullSerializer, request.data)
        return accepted(actions.oci_pull_job(self.access, node, body, address=self.address))

    @extend_schema(
        methods=["GET"], request=None, responses=RegistrySettingsSerializer, description="The registry settings."
    )
    @extend_schema(
        methods=["PUT"],
        request=RegistrySettingsSerializer,
        responses=ACCEPTED,
        description="Change the node's registry mirrors and plain-HTTP registries (Sys.Modify on /).",
    )
    @action(detail=True, methods=["get", "put"], url_path="oci-registries")
    def oci_registries(self, request, name=None):
        node = self.get_object()
        if request.method == "GET":
            return Response(actions.registry_settings(self.access, node))
        body = validated(RegistrySettingsSerializer, request.data)
        return accepted(actions.set_registry_settings(self.access, node, body, address=self.address))

    @extend_schema(request=RegistryTagsSerializer, responses={200: {"type": "array", "items": {"type": "string"}}})
    @action(detail=True, methods=["post"], url_path="templates/tags")
    def registry_tags(self, request, name=None):
        """POST, so that a password never sits in a URL (or a log of one)."""
        node = self.get_object()
        body = validated(RegistryTagsSerializer, request.data)
        tags = actions.registry_tags(
            self.access, node, body["repository"], body.get("username", ""), body.get("password", "")
        )
        return Response(tags)

    @extend_schema(request=BuildSerializer, responses=ACCEPTED)
    @action(detail=True, methods=["post"], url_path="templates/build")
    def template_build(self, request, name=None):
        node = self.get_object()
        body = validated(BuildSerializer, request.data)
        if body["builder"] not in builders.names():
            raise ValidationError(
                {"builder": [f"'{body['builder']}' is not a local builder ({', '.join(builders.names())})"]}
            )
        packages = body.get("packages") or []
        if not all(p and not p.startswith("-") and " " not in p for p in packages):
            raise ValidationError({"packages": ["package names, as strings"]})
        params = {"builder": body["builder"]}
        takes = builders.get_builder(body["builder"]).takes
        params.update({k: v for k, v in (("suite", body.get("suite")), ("packages", packages)) if v and takes(k)})
        target = "-".join([body["builder"], *([body["suite"]] if body.get("suite") else [])])
        return accepted(actions.template_job(self.access, node, "tmplbuild", target, params, address=self.address))

    @extend_schema(
        request=CatalogUpdateSerializer, responses=ACCEPTED, description="Refresh the catalog from the node's sources."
    )
    @action(detail=True, methods=["post"], url_path="templates/update")
    def catalog_update(self, request, name=None):
        node = self.get_object()
        body = validated(CatalogUpdateSerializer, request.data or {})
        params = {"source": body["source"]} if body.get("source") else {}
        return accepted(actions.template_job(self.access, node, "aptupdate", node.name, params, address=self.address))

    @extend_schema(request=None, responses=ACCEPTED, parameters=[TEMPLATE])
    @action(detail=True, methods=["delete"], url_path=r"templates/(?P<template>[^/]+)")
    def template_remove(self, request, name=None, template=None):
        node = self.get_object()
        if not StoredTemplate.objects.filter(node=node, name=template).exists():
            raise NotFound(f"no template '{template}' in the store of node '{node.name}'")
        return accepted(actions.template_job(self.access, node, "tmplremove", template, address=self.address))

    @extend_schema(
        request=StartAllSerializer,
        responses=ACCEPTED,
        description="Start the node's onboot containers (all stopped ones with force) in startup order, "
        "as Proxmox's startall; one job, a log line per container.",
    )
    @action(detail=True, methods=["post"])
    def startall(self, request, name=None):
        node = self.get_object()
        return accepted(
            actions.power_all_job(self.access, node, "startall", _object(request.data), address=self.address)
        )

    @extend_schema(
        request=StopAllSerializer,
        responses=ACCEPTED,
        description="Shut down the node's running containers in reverse startup order, each within its "
        "down timeout, as Proxmox's stopall.",
    )
    @action(detail=True, methods=["post"])
    def stopall(self, request, name=None):
        node = self.get_object()
        return accepted(
            actions.power_all_job(self.access, node, "stopall", _object(request.data), address=self.address)
        )

    @extend_schema(
        request=None,
        responses=ACCEPTED,
        description="Evacuate the node: migrate its containers (or those in vms) to target, one job each; "
        "VM.Migrate on each.",
    )
    @action(detail=True, methods=["post"])
    def migrateall(self, request, name=None):
        return _migrate_all(self, request, name)


def _migrate_all(view, request, name):
    """``POST /api/nodes/<name>/migrateall``: node evacuation, one migration job per container."""
    from rest_framework.response import Response

    from webui.actions.migrate import migrate_all
    from webui.api.serializers.base import validated
    from webui.api.serializers.machine import MigrateAllSerializer

    body = validated(MigrateAllSerializer, request.data)
    jobs = migrate_all(
        view.access,
        view.get_object(),
        body["target"],
        restart=body.get("restart", False),
        vms=body.get("vms"),
        address=view.address,
    )
    return Response({"jobs": [job.summary() for job in jobs]}, status=202)


def _object(data) -> dict:
    """startall/stopall take a JSON object (its fields are checked by ``actions.power_all_job``)."""
    if data in (None, ""):
        return {}
    if not isinstance(data, dict):
        raise ValidationError({"non_field_errors": ["a JSON object of parameters"]})
    return dict(data)
