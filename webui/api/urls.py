"""The API's routes: one router, one viewset per resource; the schema and its browsable docs."""

from django.contrib.auth.decorators import login_required
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.permissions import IsAuthenticated
from rest_framework.routers import DefaultRouter

from webui.api import schema  # noqa: F401 - registers the token scheme
from webui.api.views.access import AclViewSet, AuditViewSet, PermissionsViewSet, RoleViewSet, TokenViewSet, UserViewSet
from webui.api.views.backups import router as backups_router
from webui.api.views.containers import ContainerViewSet
from webui.api.views.firewall import firewall_urls
from webui.api.views.jobs import JobViewSet
from webui.api.views.machine import ContainerMachineViewSet
from webui.api.views.network import NetworkViewSet
from webui.api.views.nodes import NodeViewSet
from webui.api.views.pools import PoolViewSet
from webui.api.views.protection import router as protection_router
from webui.api.views.storages import StorageViewSet
from webui.api.views.template_sources import TemplateSourceViewSet
from webui.api.views.uploads import UploadViewSet

router = DefaultRouter()
router.include_format_suffixes = False
router.register("nodes", NodeViewSet, basename="node")
router.register("containers", ContainerViewSet, basename="container")
router.register("containers", ContainerMachineViewSet, basename="container-machine")
router.register("jobs", JobViewSet, basename="job")
router.register("pools", PoolViewSet, basename="pool")
router.register("access/acl", AclViewSet, basename="acl")
router.register("access/roles", RoleViewSet, basename="role")
router.register("access/users", UserViewSet, basename="user")
router.register("access/tokens", TokenViewSet, basename="token")
router.register("access/permissions", PermissionsViewSet, basename="permission")
router.register("audit", AuditViewSet, basename="audit")

urlpatterns = [
    # Behind login: the schema for a session or a token, the docs page for a session (else the login page).
    path("schema/", SpectacularAPIView.as_view(permission_classes=[IsAuthenticated]), name="api-schema"),
    path(
        "docs/",
        login_required(
            SpectacularSwaggerSplitView.as_view(url_name="api-schema", permission_classes=[IsAuthenticated])
        ),
        name="api-docs",
    ),
    path(
        "nodes/<str:name>/template-sources/",
        TemplateSourceViewSet.as_view({"get": "list", "post": "create"}),
        name="template-source-list",
    ),
    path(
        "nodes/<str:name>/template-sources/<str:source>",
        TemplateSourceViewSet.as_view({"get": "retrieve", "put": "update", "delete": "destroy"}),
        name="template-source-detail",
    ),
    path(
        "nodes/<str:name>/network/",
        NetworkViewSet.as_view({"get": "list", "post": "create", "put": "apply"}),
        name="node-network-list",
    ),
    path(
        "nodes/<str:name>/network/<str:iface>",
        NetworkViewSet.as_view({"get": "retrieve", "put": "update", "delete": "destroy"}),
        name="node-network-detail",
    ),
    path("nodes/<str:name>/storage/", StorageViewSet.as_view({"get": "list", "post": "create"}), name="node-storage"),
    path(
        "nodes/<str:name>/storage/<str:storage>",
        StorageViewSet.as_view({"delete": "destroy"}),
        name="node-storage-detail",
    ),
    path("nodes/<str:name>/templates/upload", UploadViewSet.as_view({"post": "create"}), name="template-upload"),
    path("uploads/<str:upload>", UploadViewSet.as_view({"get": "retrieve", "put": "update"}), name="upload"),
    *firewall_urls(),
    *router.urls,
]

# Backups: archives, a container's backups, the datacenter's backup jobs (a router of their own).
urlpatterns += backups_router.urls
# Protection policies and their notification targets (Datacenter -> Protection).
urlpatterns += protection_router.urls
