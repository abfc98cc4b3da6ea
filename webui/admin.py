"""Django's admin for what has no page of its own: users and groups (Django's), roles and grants,
API tokens, pools, and a read-only view of the audit log and the mirror.

Access is the admin's usual staff check; the console's own pages and API
apply Caisson's roles.  Mirror rows (containers, templates, storages) are
read-only here: the nodes own them.  Users, groups, roles and grants are the
API's rules too: Permissions.Modify on ``/`` besides the staff check, no one
hands out a privilege they do not hold, and only a superuser manages a
superuser or makes anyone staff or superuser.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.template.response import TemplateResponse

from webui.access import access_for, check_grant, check_manages, check_memberships
from webui.models import AccessEntry, ApiToken, AuditEntry, Container, Node, Pool, Role, StorageMirror


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class PermissionsAdmin(admin.ModelAdmin):
    """Changes need Permissions.Modify on / besides Django's model permission (reading too)."""

    def _may(self, request) -> bool:
        return access_for(request).can("Permissions.Modify", path="/")

    def has_view_permission(self, request, obj=None) -> bool:
        return self._may(request) and super().has_view_permission(request, obj)

    def has_add_permission(self, request) -> bool:
        return self._may(request) and super().has_add_permission(request)

    def has_change_permission(self, request, obj=None) -> bool:
        return self._may(request) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return self._may(request) and super().has_delete_permission(request, obj)


@admin.register(Role)
class RoleAdmin(PermissionsAdmin):
    list_display = ["name", "builtin", "privileges"]
    readonly_fields = ["builtin"]

    def has_change_permission(self, request, obj=None) -> bool:
        return not (obj and obj.builtin) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return not (obj and obj.builtin) and super().has_delete_permission(request, obj)

    def save_model(self, request, obj, form, change) -> None:
        before = set(Role.objects.get(pk=obj.pk).privileges) if change else set()
        check_grant(access_for(request), "/", before ^ set(obj.privileges), f"role '{obj.name}'")
        super().save_model(request, obj, form, change)

    def delete_model(self, request, obj) -> None:
        check_grant(access_for(request), "/", obj.privileges, f"deleting role '{obj.name}'")
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset) -> None:
        for role in queryset:
            check_grant(access_for(request), "/", role.privileges, f"deleting role '{role.name}'")
        super().delete_queryset(request, queryset)


@admin.register(AccessEntry)
class AccessEntryAdmin(PermissionsAdmin):
    list_display = ["path", "user", "group", "role", "propagate"]
    list_filter = ["role", "propagate"]
    search_fields = ["path", "user__username", "group__name"]

    @staticmethod
    def _check(request, entry: AccessEntry, verb: str) -> None:
        access = access_for(request)
        check_manages(access, entry.user if entry.user_id else None)
        check_grant(access, entry.path, entry.role.privileges, f"{verb} role '{entry.role.name}'")

    def save_model(self, request, obj, form, change) -> None:
        if change:
            self._check(request, AccessEntry.objects.get(pk=obj.pk), "changing")
        self._check(request, obj, "granting")
        super().save_model(request, obj, form, change)

    def delete_model(self, request, obj) -> None:
        self._check(request, obj, "revoking")
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset) -> None:
        for entry in queryset.select_related("user", "role"):
            self._check(request, entry, "revoking")
        super().delete_queryset(request, queryset)


admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class CaissonUserAdmin(PermissionsAdmin, UserAdmin):
    """Django's user admin, less what would let a manager of permissions become or touch a superuser."""

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser:
            fields += ["is_superuser", "is_staff", "user_permissions"]
        return fields

    def has_change_permission(self, request, obj=None) -> bool:
        return not (obj and obj.is_superuser and not request.user.is_superuser) and super().has_change_permission(
            request, obj
        )

    def has_delete_permission(self, request, obj=None) -> bool:
        return not (obj and obj.is_superuser and not request.user.is_superuser) and super().has_delete_permission(
            request, obj
        )

    def save_model(self, request, obj, form, change) -> None:
        access = access_for(request)
        if change:
            check_manages(access, User.objects.get(pk=obj.pk))
        check_manages(access, obj)
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change) -> None:
        if "groups" in form.cleaned_data:
            before = set(form.instance.groups.all()) if change else set()
            check_memberships(
                access_for(request), before ^ set(form.cleaned_data["groups"]), "joining or leaving a group"
            )
        super().save_related(request, form, formsets, change)

    def delete_queryset(self, request, queryset) -> None:
        for user in queryset:
            check_manages(access_for(request), user)
        super().delete_queryset(request, queryset)


@admin.register(Group)
class CaissonGroupAdmin(PermissionsAdmin, GroupAdmin):
    """Django's group admin; its Django permissions stay a superuser's to hand out."""

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        return fields if request.user.is_superuser else [*fields, "permissions"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are issued through the API (the secret is shown once there); here they are listed and revoked."""

    list_display = ["user", "name", "comment", "created", "expires", "last_used"]
    readonly_fields = ["user", "name", "secret_hash", "created", "last_used"]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(Pool)
class PoolAdmin(admin.ModelAdmin):
    list_display = ["name", "comment"]


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnly):
    list_display = ["time", "username", "action", "path", "outcome", "address"]
    list_filter = ["outcome", "action"]
    search_fields = ["username", "path", "action"]


@admin.register(Node)
class NodeAdmin(ReadOnly):
    list_display = ["name", "last_seen", "cpus", "memory_total"]


@admin.register(Container)
class ContainerAdmin(ReadOnly):
    list_display = ["ctid", "hostname", "node", "status", "pool"]
    list_filter = ["status", "node"]
    search_fields = ["hostname"]


@admin.register(StorageMirror)
class StorageMirrorAdmin(ReadOnly):
    list_display = ["name", "node", "type", "total", "used", "enabled"]


_admin_login = admin.site.login


def throttled_login(request, extra_context=None):
    """The admin's own login counts failures with the login page's limits (``webui.login_limits``) and is
    refused the same way: 429, with the wait, and the password not checked."""
    from webui.views.auth import refused, refused_form

    message = refused(request) if request.method == "POST" else None
    if not message:
        return _admin_login(request, extra_context)
    form = refused_form(AdminAuthenticationForm, request, message)
    context = {
        **admin.site.each_context(request),
        "title": "Log in",
        "site_header": admin.site.site_header,
        "app_path": request.get_full_path(),
        "form": form,
        "username": request.POST.get("username", ""),
        **(extra_context or {}),
    }
    return TemplateResponse(request, admin.site.login_template or "admin/login.html", context, status=429)


admin.site.login = throttled_login
