"""Django's admin for what has no page of its own: users and groups (Django's), roles and grants,
API tokens, pools, and a read-only view of the audit log and the mirror.

Access is the admin's usual staff check; the console's own pages and API
apply Caisson's roles.  Mirror rows (containers, templates, storages) are
read-only here: the nodes own them.
"""
from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.template.response import TemplateResponse

from webui.models import AccessEntry, ApiToken, AuditEntry, Container, Node, Pool, Role, StorageMirror


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Role)
class RoleAdmin(admin.ModelAdmin):
    list_display = ["name", "builtin", "privileges"]
    readonly_fields = ["builtin"]

    def has_change_permission(self, request, obj=None) -> bool:
        return not (obj and obj.builtin) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return not (obj and obj.builtin) and super().has_delete_permission(request, obj)


@admin.register(AccessEntry)
class AccessEntryAdmin(admin.ModelAdmin):
    list_display = ["path", "user", "group", "role", "propagate"]
    list_filter = ["role", "propagate"]
    search_fields = ["path", "user__username", "group__name"]


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
    context = {**admin.site.each_context(request), "title": "Log in", "site_header": admin.site.site_header,
               "app_path": request.get_full_path(), "form": form, "username": request.POST.get("username", ""),
               **(extra_context or {})}
    return TemplateResponse(request, admin.site.login_template or "admin/login.html", context, status=429)


admin.site.login = throttled_login
