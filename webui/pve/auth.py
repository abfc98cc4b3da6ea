"""Proxmox's authentication: tickets (``POST /access/ticket``, the ``PVEAuthCookie``), the CSRF token asked
of every changing request made with a ticket, and ``PVEAPIToken`` headers.

A ticket is ``PVE:<user>@pve:<hex time>::<signature>`` as Proxmox's, valid two hours; the signature is an
HMAC (keyed from Django's ``SECRET_KEY``) over the user ID, the time and the user's password hash, so a
password change ends every ticket.  A still-valid ticket given as the password renews it, as Proxmox's
clients do.  The CSRF token, ``<hex time>:<signature>``, is bound to the user and the ticket's time.
Nothing of a ticket is stored; API token secrets are checked against their SHA-256 (``ApiToken``).
Failed logins and token tries count with every other login path's (``webui.login_limits``).
"""

from __future__ import annotations

import base64
import hmac
import time

from django.contrib.auth import authenticate, get_user_model
from django.utils.crypto import salted_hmac

from webui.login_limits import blocked_for, clear_failures, client_address, record_failure
from webui.pve.errors import PveError
from webui.userid import REALM

TICKET_LIFETIME = 2 * 3600  # seconds, Proxmox's
COOKIE = "PVEAuthCookie"


def _signature(kind: str, text: str, user) -> str:
    digest = salted_hmac(f"caisson.pve.{kind}", f"{text}:{user.password}", algorithm="sha256").digest()
    return base64.b64encode(digest).decode().rstrip("=")


def userid_of(user) -> str:
    return f"{user.username}@{REALM}"


def user_of(userid: str):
    """The active user behind ``name@pve`` (Caisson's accounts are Proxmox's ``pve`` realm), or None."""
    name, at, realm = userid.rpartition("@")
    if not at or realm != REALM or not name:
        return None
    return get_user_model().objects.filter(username=name, is_active=True).first()


def make_ticket(user, now: float | None = None) -> tuple[str, str]:
    """(ticket, CSRF prevention token) for ``user``."""
    stamp = f"{int(now if now is not None else time.time()):08X}"
    plain = f"PVE:{userid_of(user)}:{stamp}"
    return (
        f"{plain}::{_signature('ticket', plain, user)}",
        f"{stamp}:{_signature('csrf', stamp + userid_of(user), user)}",
    )


def check_ticket(ticket: str):
    """The user a valid, unexpired ticket was made for, or None."""
    plain, sep, signature = (ticket or "").partition("::")
    parts = plain.split(":")
    if not sep or len(parts) != 3 or parts[0] != "PVE":
        return None
    try:
        issued = int(parts[2], 16)
    except ValueError:
        return None
    if not -300 < time.time() - issued < TICKET_LIFETIME:
        return None
    user = user_of(parts[1])
    if user is None or not hmac.compare_digest(signature, _signature("ticket", plain, user)):
        return None
    return user


def check_csrf(token: str, ticket: str, user) -> bool:
    stamp = (ticket or "").partition("::")[0].split(":")[-1]
    return hmac.compare_digest(token or "", f"{stamp}:{_signature('csrf', stamp + userid_of(user), user)}")


def login(request, username: str, password: str) -> dict:
    """``POST /access/ticket``: a new ticket for a password, or for a still-valid ticket of the same user."""
    address = client_address(request)
    name = username.rpartition("@")[0] or username
    wait = blocked_for(name, address)
    if wait:
        raise PveError(401, "authentication failure")
    user = check_ticket(password) if password.startswith("PVE:") else None
    if user is not None and userid_of(user) != username:
        user = None
    if user is None and username.endswith(f"@{REALM}") and not password.startswith("PVE:"):
        user = authenticate(request, username=name, password=password)  # counts a failure itself
    elif user is None:
        record_failure(name, address)
    if user is None or not user.is_active:
        raise PveError(401, "authentication failure")
    clear_failures(user.username)
    ticket, csrf = make_ticket(user)
    return {
        "ticket": ticket,
        "CSRFPreventionToken": csrf,
        "username": userid_of(user),
        "cap": capabilities(user),
    }


def capabilities(user) -> dict:
    """The ``cap`` of a login answer: what the user holds on ``/``, grouped as Proxmox groups them."""
    from webui.access import Access

    held = Access(user).privileges("/")
    groups = {"vms": "VM.", "storage": "Datastore.", "access": "Permissions.", "nodes": "Sys.", "dc": "Sys."}
    return {key: {p: 1 for p in held if p.startswith(prefix)} for key, prefix in groups.items()}


def token_of(header: str, request):
    """The ``ApiToken`` of ``PVEAPIToken=<user>@pve!<name>=<secret>``; 401 for a wrong or expired one."""
    from webui.models import ApiToken

    value = header.removeprefix("PVEAPIToken").lstrip("= ")
    userpart, sep, secret = value.partition("=")
    userid, bang, name = userpart.partition("!")
    username = userid.rpartition("@")[0]
    address = client_address(request)
    if blocked_for(username, address):
        raise PveError(401, "authentication failure")
    token = None
    if sep and bang and username and userid.endswith(f"@{REALM}"):
        token = ApiToken.objects.select_related("user").filter(user__username=username, name=name).first()
    if (
        token is None
        or not hmac.compare_digest(token.secret_hash, ApiToken.hash(secret))
        or token.expired
        or not token.user.is_active
    ):
        record_failure(username, address)
        raise PveError(401, "authentication failure")
    token.touch()
    return token
