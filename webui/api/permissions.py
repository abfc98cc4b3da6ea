"""Who may call what: permission classes that read a view's table of privileges and ask ``Access``.

Views declare what each action needs, as data::

    object_privileges = {"power": "VM.PowerMgmt", "config:PUT": "VM.Config"}  # on the object itself
    path_privileges = {"list": ("Sys.Audit", "/")}  # on a fixed access path

and never check in their bodies.  A refusal is audited (``webui.access.require``)
and answered with 403.  Objects a user may not see at all are filtered out of
the view's queryset first, so they are 404, not 403: existence does not leak.
"""

from __future__ import annotations

from rest_framework.permissions import BasePermission

from webui.access import access_for, require
from webui.login_limits import client_address  # noqa: F401 - used here and imported from here


class ObjectPrivilege(BasePermission):
    """The privilege ``view.object_privileges[view.action]`` on the object (a container inherits from node
    and pool); actions not in the table need nothing beyond seeing the object."""

    def has_object_permission(self, request, view, obj) -> bool:
        table, action = getattr(view, "object_privileges", {}), getattr(view, "action", None)
        privilege = table.get(f"{action}:{request.method}", table.get(action))
        if privilege:
            require(access_for(request), privilege, obj, address=client_address(request))
        return True


class PathPrivilege(BasePermission):
    """The privilege ``view.path_privileges[view.action] = (privilege, path)`` on a fixed path."""

    def has_permission(self, request, view) -> bool:
        table, action = getattr(view, "path_privileges", {}), getattr(view, "action", None)
        rule = table.get(f"{action}:{request.method}", table.get(action))
        if rule:
            privilege, path = rule
            require(access_for(request), privilege, path=path, address=client_address(request))
        return True
