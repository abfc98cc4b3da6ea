"""Resolve what a user may do on a path: one place for pages, API, websockets and console alike."""
from __future__ import annotations

from collections import defaultdict

from webui.privileges import PRIVILEGES, container_paths, object_paths


class Access:
    """A user's ACL, loaded once per request (a handful of rows), then answered in memory.

    Resolution per level, least specific first: entries on the level's paths
    (propagating ones, or any entry when the path is the object itself)
    replace whatever came from above; at one level a user's own entries win
    over their groups'.
    """

    def __init__(self, user):
        self.user = user
        self.superuser = bool(user and user.is_active and user.is_superuser)
        self.own: dict[str, list[tuple[bool, frozenset[str]]]] = defaultdict(list)
        self.groups: dict[str, list[tuple[bool, frozenset[str]]]] = defaultdict(list)
        if self.superuser or not (user and user.is_authenticated and user.is_active):
            return
        from webui.models import AccessEntry

        group_ids = list(user.groups.values_list("id", flat=True))
        rows = (AccessEntry.objects.filter(user=user) | AccessEntry.objects.filter(group_id__in=group_ids))
        for path, user_id, propagate, privileges in rows.values_list("path", "user_id", "propagate",
                                                                      "role__privileges"):
            table = self.own if user_id else self.groups
            table[path].append((propagate, frozenset(privileges)))

    def _level(self, paths: list[str], exact: bool) -> frozenset[str] | None:
        for table in (self.own, self.groups):
            found: set[str] | None = None
            for path in paths:
                for propagate, privileges in table.get(path, ()):
                    if propagate or exact:
                        found = (found or set()) | privileges
            if found is not None:
                return frozenset(found)
        return None

    def _resolve(self, levels: list[list[str]]) -> frozenset[str]:
        if self.superuser:
            return frozenset(PRIVILEGES)
        result: frozenset[str] = frozenset()
        for index, paths in enumerate(levels):
            level = self._level(paths, exact=index == len(levels) - 1)
            if level is not None:
                result = level
        return result

    def privileges(self, path: str) -> frozenset[str]:
        return self._resolve(object_paths(path))

    def container_privileges(self, container) -> frozenset[str]:
        node = container.node.name if container.node_id else None
        pool = container.pool.name if container.pool_id else None
        return self._resolve(container_paths(container.ctid, node, pool))

    def can(self, privilege: str, obj=None, path: str = "/") -> bool:
        """``obj`` is a Container (inherits from node and pool) or anything with a ``path``."""
        if obj is not None and hasattr(obj, "ctid"):
            return privilege in self.container_privileges(obj)
        return privilege in self.privileges(obj.path if obj is not None else path)

    def visible_containers(self, queryset):
        """The containers this user may see (VM.Audit), as a queryset, without a query per row."""
        if self.superuser:
            return queryset
        if not (self.own or self.groups):
            return queryset.none()
        rows = queryset.select_related("node", "pool").only("id", "ctid", "node__name", "pool__name")
        allowed = [c.id for c in rows if "VM.Audit" in self.container_privileges(c)]
        return queryset.filter(id__in=allowed)

    def anything_granted(self) -> bool:
        return self.superuser or bool(self.own or self.groups)


def access_for(request) -> Access:
    """The request's Access, built on first use."""
    cached = getattr(request, "_caisson_access", None)
    if cached is None or cached.user is not request.user:
        cached = Access(request.user)
        request._caisson_access = cached
    return cached
