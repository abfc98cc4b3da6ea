"""The cluster's actions: join tokens for new nodes, and removing a node that is gone.

Both are the administrator's (``Sys.Modify`` on ``/``, as Proxmox keeps cluster membership to root):
a token lets a machine run jobs for everyone, and removing a node forgets what it held.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError

from webui.access import Access, audit, require
from webui.models import JoinToken, Node
from webui.models.cluster import SHARED_SECRETS, NodeBusy, forget_node


def make_join_token(access: Access, minutes: int = 60, address: str | None = None) -> tuple[JoinToken, str]:
    """A single-use join token valid ``minutes`` (shown once; only its digest is kept)."""
    from django.conf import settings

    from webui import keys

    require(access, "Sys.Modify", path="/", address=address)
    shared = {name: keys.read(settings.CAISSON_SECRETS, name) for name in SHARED_SECRETS}
    try:
        row, token = JoinToken.issue(shared, access.user, minutes)
    except ValueError as exc:
        raise ValidationError({"minutes": [str(exc)]}) from None
    audit(access, "node.join-token", "/", address, expires=row.expires.isoformat())
    return row, token


def remove_node(access: Access, node: Node, address: str | None = None) -> None:
    """Forget a node that is gone (``webui.models.cluster.forget_node``). Refused while its agent is alive
    (stop it first: ``run.sh leave``), and while the mirror lists containers on it or jobs are queued or running
    there: a dead node's containers leave the mirror when an administrator deletes or moves those rows."""
    require(access, "Sys.Modify", path="/", address=address)
    if node.online:
        raise ValidationError({"node": [f"node '{node.name}' is online; stop its agent first (run.sh leave)"]})
    name, path = node.name, node.path
    try:
        forget_node(node)
    except NodeBusy as exc:
        raise ValidationError({"node": [str(exc)]}) from None
    audit(access, "node.remove", path, address, node=name)
