"""``/api/access/``: ACL, roles, users, the caller's API tokens and effective privileges; ``/api/audit/``.

Changing the ACL, roles or users needs Permissions.Modify on ``/``; every
change is written to the audit log.  Built-in roles are read-only.  As in
Proxmox, no one hands out what they do not hold: granting or revoking a role
on a path, making or changing a role, and moving a user into or out of a
group need every privilege involved, on that path (``/`` for roles); and
only a superuser manages or grants to a superuser.
"""

from __future__ import annotations

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from webui.access import check_grant, check_manages, check_memberships
from webui.api.serializers.access import (
    AccessEntrySerializer,
    ApiTokenIssuedSerializer,
    ApiTokenSerializer,
    AuditEntrySerializer,
    PermissionsSerializer,
    RoleSerializer,
    UserSerializer,
)
from webui.api.serializers.base import validated
from webui.api.views.base import ApiViewSet
from webui.models import AccessEntry, ApiToken, AuditEntry, Container, Role
from webui.privileges import validate_path

ADMIN = ("Permissions.Modify", "/")


class AuditedMixin:
    def audit(self, action: str, path: str = "/", **detail) -> None:
        user = self.request.user
        AuditEntry.objects.create(
            user=user, username=user.username, action=action, path=path, address=self.address, detail=detail
        )


@extend_schema(tags=["access"])
class AclViewSet(AuditedMixin, mixins.ListModelMixin, mixins.CreateModelMixin, mixins.DestroyModelMixin, ApiViewSet):
    """The ACL: a role for a user or a group on a path (inherited below it when ``propagate``)."""

    queryset = AccessEntry.objects.select_related("user", "group", "role", "token__user")
    serializer_class = AccessEntrySerializer
    path_privileges = {"list": ADMIN, "create": ADMIN, "destroy": ADMIN, "retrieve": ADMIN}

    @extend_schema(
        parameters=[OpenApiParameter("path", str), OpenApiParameter("user", str), OpenApiParameter("group", str)]
    )
    def list(self, request, *args, **kwargs):
        queryset = self.get_queryset()
        for param, field in (("path", "path"), ("user", "user__username"), ("group", "group__name")):
            if request.query_params.get(param):
                queryset = queryset.filter(**{field: request.query_params[param]})
        return self.paged(queryset)

    def perform_create(self, serializer):
        data = serializer.validated_data
        check_manages(self.access, data.get("user"))
        check_grant(self.access, data["path"], data["role"].privileges, f"granting role '{data['role'].name}'")
        entry = serializer.save()
        self.audit(
            "acl.grant",
            entry.path,
            role=entry.role.name,
            propagate=entry.propagate,
            **({"user": entry.user.username} if entry.user_id else {"group": entry.group.name}),
        )

    def perform_destroy(self, entry):
        check_manages(self.access, entry.user)
        check_grant(self.access, entry.path, entry.role.privileges, f"revoking role '{entry.role.name}'")
        self.audit(
            "acl.revoke",
            entry.path,
            role=entry.role.name,
            **({"user": entry.user.username} if entry.user_id else {"group": entry.group.name}),
        )
        entry.delete()


@extend_schema(tags=["access"])
class RoleViewSet(
    AuditedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    ApiViewSet,
):
    """Roles anyone signed in may read; custom ones are made and changed with Permissions.Modify on /."""

    queryset = Role.objects.all()
    serializer_class = RoleSerializer
    lookup_field = "name"
    lookup_value_regex = r"[A-Za-z0-9_.-]+"
    path_privileges = {"create": ADMIN, "update": ADMIN, "partial_update": ADMIN, "destroy": ADMIN}

    def get_object(self):
        role = super().get_object()
        if role.builtin and self.request.method not in ("GET", "HEAD", "OPTIONS"):
            raise PermissionDenied(f"'{role.name}' is a built-in role and cannot be changed")
        return role

    def perform_create(self, serializer):
        check_grant(self.access, "/", serializer.validated_data.get("privileges", []), "a role with these privileges")
        role = serializer.save(builtin=False)
        self.audit("role.create", role=role.name, privileges=role.privileges)

    def perform_update(self, serializer):
        changed = set(serializer.instance.privileges) ^ set(
            serializer.validated_data.get("privileges", serializer.instance.privileges)
        )
        check_grant(self.access, "/", changed, f"changing role '{serializer.instance.name}'")
        role = serializer.save()
        self.audit("role.update", role=role.name, privileges=role.privileges)

    def perform_destroy(self, role):
        check_grant(self.access, "/", role.privileges, f"deleting role '{role.name}'")
        self.audit("role.delete", role=role.name)
        role.delete()


@extend_schema(tags=["access"])
class UserViewSet(
    AuditedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    ApiViewSet,
):
    """Users, for holders of Permissions.Modify on /.  Users are disabled, never deleted (the audit log
    keeps naming them)."""

    queryset = User.objects.prefetch_related("groups").order_by("username")
    serializer_class = UserSerializer
    lookup_field = "username"
    lookup_value_regex = r"[\w.@+-]+"
    path_privileges = {
        action: ADMIN for action in ("list", "retrieve", "create", "update", "partial_update", "disable")
    }

    def perform_create(self, serializer):
        check_memberships(self.access, serializer.validated_data.get("groups", []), "joining a group")
        user = serializer.save()
        self.audit("user.create", user=user.username)

    def perform_update(self, serializer):
        check_manages(self.access, serializer.instance)
        if "groups" in serializer.validated_data:
            changed = set(serializer.instance.groups.all()) ^ set(serializer.validated_data["groups"])
            check_memberships(self.access, changed, "joining or leaving a group")
        if serializer.instance == self.request.user and serializer.validated_data.get("is_active") is False:
            raise ValidationError({"is_active": ["you cannot disable your own account"]})
        user = serializer.save()
        self.audit("user.update", user=user.username, fields=sorted(set(serializer.validated_data) - {"password"}))

    @extend_schema(request=None, responses=UserSerializer)
    @action(detail=True, methods=["post"])
    def disable(self, request, username=None):
        user = self.get_object()
        check_manages(self.access, user)
        if user == request.user:
            raise ValidationError({"is_active": ["you cannot disable your own account"]})
        user.is_active = False
        user.save(update_fields=["is_active"])
        self.audit("user.disable", user=user.username)
        return Response(UserSerializer(user).data)


@extend_schema(tags=["access"])
class TokenViewSet(AuditedMixin, mixins.ListModelMixin, mixins.DestroyModelMixin, ApiViewSet):
    """The caller's own API tokens.  The secret is shown once, in the answer to the create."""

    serializer_class = ApiTokenSerializer
    lookup_field = "name"
    lookup_value_regex = r"[A-Za-z][A-Za-z0-9_.-]*"

    def get_queryset(self):
        return ApiToken.objects.filter(user=self.request.user)

    @extend_schema(request=ApiTokenSerializer, responses={201: ApiTokenIssuedSerializer})
    def create(self, request):
        data = validated(ApiTokenSerializer, request.data)
        token, value = ApiToken.issue(
            request.user, data["name"], data.get("comment", ""), data.get("expires"), bool(data.get("privsep"))
        )
        self.audit("token.create", token=str(token))
        return Response({**ApiTokenSerializer(token).data, "value": value}, status=status.HTTP_201_CREATED)

    def perform_destroy(self, token):
        self.audit("token.delete", token=str(token))
        token.delete()


@extend_schema(tags=["access"])
class PermissionsViewSet(ApiViewSet):
    """The caller's effective privileges, like Proxmox's ``/access/permissions``."""

    serializer_class = PermissionsSerializer
    pagination_class = None

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "path", str, description="an access path; default: / and every path the caller has entries on"
            )
        ]
    )
    def list(self, request):
        access = self.access
        path = request.query_params.get("path")
        if path is not None:  # a query parameter: always a string
            validate_path(path)
            paths = [path]
        else:
            paths = sorted({"/", *access.own, *access.groups})
        result = []
        for item in paths:
            container = None
            if item.startswith("/ct/"):
                container = (
                    access.visible_containers(Container.objects.select_related("node", "pool"))
                    .filter(ctid=int(item[4:]))
                    .first()
                )
            privileges = access.container_privileges(container) if container else access.privileges(item)
            result.append({"path": item, "privileges": sorted(privileges)})
        return Response(result)


@extend_schema(tags=["access"])
class AuditViewSet(mixins.ListModelMixin, ApiViewSet):
    """The audit log, newest first; needs Sys.Audit on /."""

    queryset = AuditEntry.objects.all()
    serializer_class = AuditEntrySerializer
    path_privileges = {"list": ("Sys.Audit", "/")}

    @extend_schema(
        parameters=[
            OpenApiParameter("user", str),
            OpenApiParameter("action", str),
            OpenApiParameter("path", str),
            OpenApiParameter("outcome", str, enum=["ok", "denied", "failed"]),
        ]
    )
    def list(self, request, *args, **kwargs):
        queryset = self.get_queryset()
        for param, field in (("user", "username"), ("action", "action"), ("path", "path"), ("outcome", "outcome")):
            if request.query_params.get(param):
                queryset = queryset.filter(**{field: request.query_params[param]})
        return self.paged(queryset)
