"""Who may hold a console: the mode a container offers, ticket redemption, the re-check, the audit rows.

Synchronous database work, run by the consumer through
``database_sync_to_async``; the ticket page (``webui.views.console``) asks
the same ``mode_refusal`` when it issues a ticket.
"""

from __future__ import annotations

from tasks.console_protocol import MODES, is_session_id

CLOSE_DENIED = 4403  # the close code of every refusal here (ticket or permission)


def container_cmode(container) -> str:
    """The console mode the container's config asks for (``cmode``; absent: ``tty``, as in Proxmox)."""
    cmode = (container.config or {}).get("cmode") or "tty"
    return cmode if cmode in MODES else "tty"


def mode_refusal(access, container, mode: str) -> str | None:
    """Why ``mode`` is refused to a VM.Console holder, or None. Any mode but the container's ``cmode``
    needs VM.Config: a login prompt must not turn into a root shell for whoever may only log in."""
    cmode = container_cmode(container)
    if mode == cmode or access.can("VM.Config", container):
        return None
    return (
        f"permission denied: CT {container.ctid} offers a {cmode} console (cmode); "
        f"a {mode} console needs VM.Config on {container.path}"
    )


def redeem(token: str, user, ctid: int) -> dict:
    """Use the ticket once: ``{"node", "mode", "session"}`` (session: the one to resume, or empty), or
    ``{"refused": why, "code": close code}``. Access is checked again: it may have changed since the ticket."""
    from django.utils import timezone

    from webui.access import Access
    from webui.models import ConsoleTicket

    ticket = ConsoleTicket.find(token)
    if ticket is None:
        return {
            "refused": "no valid console ticket (it is unknown or was forged); reload the console",
            "code": CLOSE_DENIED,
        }
    if ticket.user_id != user.id:
        return {"refused": "this console ticket was issued to another user", "code": CLOSE_DENIED}
    if ticket.container.ctid != ctid:
        return {
            "refused": f"this console ticket is for CT {ticket.container.ctid}, not CT {ctid}",
            "code": CLOSE_DENIED,
        }
    if ticket.expires <= timezone.now():
        return {"refused": "the console ticket expired; reload the console", "code": CLOSE_DENIED}
    if not ticket.redeem():
        return {"refused": "the console ticket was already used; reload the console", "code": CLOSE_DENIED}
    container = ticket.container
    access = Access(user)
    if not access.can("VM.Console", container):
        return {"refused": f"permission denied: VM.Console on {container.path} is required", "code": CLOSE_DENIED}
    refusal = mode_refusal(access, container, ticket.mode)
    if refusal:  # checked again here: cmode or the user's rights may have changed since the ticket
        return {"refused": refusal, "code": CLOSE_DENIED}
    if ticket.mode not in MODES or (ticket.session and not is_session_id(ticket.session)):
        return {"refused": "malformed console ticket", "code": CLOSE_DENIED}
    return {"node": container.node.name, "mode": ticket.mode, "session": ticket.session}


def still_allowed(user_id: int, ctid: int, mode: str) -> bool:
    """Whether the user is still active and may still open ``mode`` on the container."""
    from django.contrib.auth import get_user_model

    from webui.access import Access
    from webui.models import Container

    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    container = Container.objects.select_related("node", "pool").filter(ctid=ctid).first()
    if not (user and container):
        return False
    access = Access(user)
    return access.can("VM.Console", container) and mode_refusal(access, container, mode) is None


def audit(scope, path: str, action: str, outcome: str, detail: dict) -> None:
    from webui.models import AuditEntry

    user = scope.get("user")
    user = user if user is not None and user.is_authenticated else None
    client = scope.get("client") or (None, None)
    AuditEntry.objects.create(
        user=user,
        username=getattr(user, "username", ""),
        action=action,
        path=path,
        address=client[0],
        outcome=outcome,
        detail=detail,
    )
