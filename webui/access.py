"""Resolve what a user may do on a path: one place for pages, API, websockets and console alike."""

from __future__ import annotations

import operator
from collections import defaultdict
from contextvars import ContextVar
from functools import reduce

from django.core.exceptions import PermissionDenied
from django.db.models import Q

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
        rows = AccessEntry.objects.filter(user=user) | AccessEntry.objects.filter(group_id__in=group_ids)
        for path, user_id, propagate, privileges in rows.values_list(
            "path", "user_id", "propagate", "role__privileges"
        ):
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

    def ctid_privileges(self, ctid: int, node: str | None) -> frozenset[str]:
        """What the user holds on ``/ct/<ctid>``, whether or not that container still exists: the
        container's own levels when it does, else ``/``, the node named and the ID's own entries (an
        archive outlives its container, and its checks must still answer)."""
        from webui.models import Container

        container = Container.objects.select_related("node", "pool").filter(ctid=ctid).first()
        if container is not None:
            return self.container_privileges(container)
        return self._resolve(container_paths(ctid, node, None))

    def can(self, privilege: str, obj=None, path: str = "/") -> bool:
        """``obj`` is a Container (inherits from node and pool) or anything with a ``path``."""
        if obj is not None and hasattr(obj, "ctid"):
            return privilege in self.container_privileges(obj)
        return privilege in self.privileges(obj.path if obj is not None else path)

    def visible_containers(self, queryset):
        """The containers this user may see (VM.Audit), as a queryset, without a query per row.

        A container's privileges depend only on its node, its pool and entries on its own path, so
        the check runs once per distinct (node, pool) pair (a handful) plus once per container that
        has entries of its own, never once per container: one small query, then a filter in SQL.
        """
        if self.superuser:
            return queryset
        if not (self.own or self.groups):
            return queryset.none()
        own_path = {int(path[4:]) for table in (self.own, self.groups) for path in table if path.startswith("/ct/")}
        pairs = (
            queryset.exclude(ctid__in=own_path)
            .order_by()
            .values_list("node_id", "node__name", "pool_id", "pool__name")
            .distinct()
        )
        shown, hidden = [], 0
        for node_id, node, pool_id, pool in pairs:
            if "VM.Audit" in self._resolve(container_paths(0, node, pool)):  # /ct/0: a path with no entries
                shown.append(Q(node_id=node_id, pool_id=pool_id) if pool_id else Q(node_id=node_id, pool__isnull=True))
            else:
                hidden += 1
        with_entries = (
            list(
                queryset.filter(ctid__in=own_path)
                .select_related("node", "pool")
                .only("ctid", "node__name", "pool__name")
            )
            if own_path
            else []
        )
        special = [c.ctid for c in with_entries if "VM.Audit" in self.container_privileges(c)]
        if not hidden and len(special) == len(with_entries):
            return queryset  # every container is visible: no filter at all
        by_pair = reduce(operator.or_, shown) & ~Q(ctid__in=own_path) if shown else Q(pk__in=[])
        return queryset.filter(by_pair | Q(ctid__in=special))

    def anything_granted(self) -> bool:
        return self.superuser or bool(self.own or self.groups)


class TokenAccess(Access):
    """A privilege-separated API token (Proxmox's ``privsep``): on every path, what its user holds there and
    its own access entries grant there, both; a superuser's token is limited the same way."""

    def __init__(self, token):
        self.user_access = Access(token.user)
        super().__init__(None)
        self.user, self.token = token.user, token
        self.limit = Access(None)
        from webui.models import AccessEntry

        for path, propagate, privileges in AccessEntry.objects.filter(token=token).values_list(
            "path", "propagate", "role__privileges"
        ):
            self.limit.own[path].append((propagate, frozenset(privileges)))

    def _resolve(self, levels: list[list[str]]) -> frozenset[str]:
        return self.user_access._resolve(levels) & self.limit._resolve(levels)

    def visible_containers(self, queryset):
        return self.user_access.visible_containers(self.limit.visible_containers(queryset))

    def anything_granted(self) -> bool:
        return self.limit.anything_granted() and self.user_access.anything_granted()


def access_of_token(token) -> Access:
    """What an API token may do: its user's rights, or with ``privsep`` only what its own entries also grant."""
    return TokenAccess(token) if token.privsep else Access(token.user)


# The API token the current request acts with (set around a request by the API views), so that a job it queues
# records it and the node re-checks the token's rights, not its user's (``job_access``).
ACTING_TOKEN: ContextVar = ContextVar("caisson_acting_token", default=None)


def job_access(job) -> Access:
    """Whom a job acts for, as the node re-checks what only it can read: the privilege-separated API token it
    was asked with (gone: no rights at all), else its user."""
    token_id = (job.params or {}).get("api_token")
    if token_id:
        from webui.models import ApiToken

        token = ApiToken.objects.select_related("user").filter(pk=token_id).first()
        return access_of_token(token) if token is not None and token.user.is_active else Access(None)
    return Access(job.user)


def access_for(request) -> Access:
    """The request's Access, built on first use (an API token's, when the request came with one)."""
    cached = getattr(request, "_caisson_access", None)
    if cached is None or cached.user is not request.user:
        token = getattr(request, "auth", None)
        cached = access_of_token(token) if token is not None and hasattr(token, "privsep") else Access(request.user)
        request._caisson_access = cached
    return cached


# ---- managing permissions: no one hands out more than they hold (Proxmox's rule) -------------------------
def held_on(access: Access, path: str) -> frozenset[str]:
    """What the user holds on an access path (a container's through its node and pool, if it exists)."""
    if path.startswith("/ct/"):
        return access.ctid_privileges(int(path[4:]), None)
    return access.privileges(path)


def check_grant(access: Access, path: str, privileges, what: str) -> None:
    """Refuse to grant, change or revoke ``privileges`` on ``path`` unless the user holds each of them there."""
    missing = sorted(set(privileges) - held_on(access, path))
    if missing and not access.superuser:
        raise PermissionDenied(
            f"permission denied: {what} needs {', '.join(missing)} on {path}, which you do not "
            "hold; no one grants more than they hold"
        )


def check_manages(access: Access, user) -> None:
    """Only a superuser creates, changes, grants to or removes a superuser."""
    if user is not None and user.is_superuser and not access.superuser:
        raise PermissionDenied(
            f"permission denied: '{user.username}' is a superuser; only a superuser may manage or grant to a superuser"
        )


def check_memberships(access: Access, groups, what: str) -> None:
    """Joining or leaving a group hands out or takes away its grants: the user must hold them all."""
    from webui.models import AccessEntry

    for path, privileges, name in AccessEntry.objects.filter(group__in=list(groups)).values_list(
        "path", "role__privileges", "group__name"
    ):
        check_grant(access, path, privileges, f"{what} (group '{name}')")


# ---- checking and auditing an action: what every action module calls ------------------------------------
def audit(access: Access, action: str, path: str, address: str | None, outcome: str = "ok", **detail) -> None:
    """One audit row for what the user did (or was refused) on ``path``."""
    from webui.models import AuditEntry

    user = access.user if access.user and access.user.is_authenticated else None
    AuditEntry.objects.create(
        user=user,
        username=getattr(user, "username", ""),
        action=action,
        path=path,
        address=address,
        outcome=outcome,
        detail=detail,
    )


def deny(access: Access, action: str, where: str, message: str, address: str | None = None) -> None:
    """Audit a refusal and raise it (403)."""
    audit(access, action, where, address, outcome="denied", message=message)
    raise PermissionDenied(message)


def require(access: Access, privilege: str, obj=None, path: str = "/", address: str | None = None) -> None:
    """Refuse (and audit the refusal) unless the user holds ``privilege`` on ``obj`` or ``path``."""
    if access.can(privilege, obj, path):
        return
    where = obj.path if obj is not None else path
    deny(access, f"denied {privilege}", where, f"permission denied: {privilege} on {where} is required", address)


def require_superuser_for(access: Access, settings: dict[str, str], where: str, address: str | None = None) -> None:
    """Root-equivalent settings (``engine.root_settings``) are for superusers alone, as Proxmox keeps them
    for root@pam: refused to anyone else, naming each key and why."""
    if not settings or access.superuser:
        return
    reasons = "; ".join(f"{key}: {why}" for key, why in settings.items())
    deny(
        access,
        "denied root-equivalent",
        where,
        f"permission denied: only a superuser may set {', '.join(settings)} ({reasons})",
        address,
    )


def require_space(access: Access, storages, address: str | None = None) -> None:
    """Datastore.AllocateSpace on every storage a change allocates on (Proxmox's ``/storage/<id>`` check)."""
    for storage in sorted({s for s in storages if s}):
        require(access, "Datastore.AllocateSpace", path=f"/storage/{storage}", address=address)
