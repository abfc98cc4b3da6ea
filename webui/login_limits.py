"""Failed logins counted and refused on every login path: the login page, Django's admin, API tokens.

A failure is counted for the user name (normalised: Unicode NFKC, surrounding space stripped, case folded, so
``Alice``, ``alice `` and ``ａｌｉｃｅ`` are one name), for the client's address and for its network (/24 for
IPv4, /64 for IPv6: one host hands itself many addresses there).  After ``LOGIN_FAILURE_LIMIT`` failures for a
name or an address, or ``LOGIN_FAILURE_NETWORK_LIMIT`` from a network, within ``LOGIN_FAILURE_WINDOW`` seconds,
further tries are refused without checking the password until the window that began with the first failure
has passed.  Counters live in Django's cache (Redis), so every web process sees the same ones.

Failures are counted from Django's ``user_login_failed`` signal, which ``authenticate`` sends on every path
that checks a password; the API's token check counts its own.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
import unicodedata

from django.conf import settings
from django.core.cache import cache


def normalise_username(username) -> str:
    return unicodedata.normalize("NFKC", str(username or "")).strip().casefold()


def network_of(address: str | None) -> str | None:
    """The /24 (IPv4) or /64 (IPv6) an address is in; an IPv4-mapped IPv6 address counts as IPv4."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def _scopes(username, address: str | None) -> list[tuple[str, str, int]]:
    """(kind, value, limit) for each counter a login try is checked against."""
    name, network = normalise_username(username), network_of(address)
    limit = settings.LOGIN_FAILURE_LIMIT
    scopes = [("user", name, limit)] if name else []
    scopes += [("address", address, limit)] if address else []
    return scopes + ([("network", network, settings.LOGIN_FAILURE_NETWORK_LIMIT)] if network else [])


def _keys(kind: str, value: str) -> tuple[str, str]:
    digest = hashlib.sha256(value.encode()).hexdigest()[:32]  # any user name fits a cache key
    return f"login-failures:{kind}:{digest}:count", f"login-failures:{kind}:{digest}:since"


def blocked_for(username, address: str | None) -> int:
    """Seconds until this user name and address may try again (0: they may now)."""
    wait = 0
    for kind, value, limit in _scopes(username, address):
        count_key, since_key = _keys(kind, value)
        found = cache.get_many([count_key, since_key])
        count, since = found.get(count_key, 0), found.get(since_key)
        if count >= limit and since is not None:
            wait = max(wait, int(since + settings.LOGIN_FAILURE_WINDOW - time.time()) + 1)
    return wait


def record_failure(username, address: str | None) -> None:
    window = settings.LOGIN_FAILURE_WINDOW
    for kind, value, _ in _scopes(username, address):
        count_key, since_key = _keys(kind, value)
        cache.add(since_key, time.time(), window)  # the window starts with the first failure
        cache.add(count_key, 0, window)
        try:
            cache.incr(count_key)
        except ValueError:  # expired between add and incr
            cache.set(count_key, 1, window)


def clear_failures(username) -> None:
    """A good login clears its name's counter (not the address's: one success must not reset a scan)."""
    name = normalise_username(username)
    if name:
        cache.delete_many(list(_keys("user", name)))


def refusal(wait: int) -> str:
    shown = f"{wait // 60} min {wait % 60} s" if wait >= 60 else f"{wait} s"
    return f"Too many failed logins for this user or from this address or network; try again in {shown}."


def client_address(request) -> str | None:
    """The peer's address; forwarded headers are not trusted (no proxy is assumed in front)."""
    return (request.META.get("REMOTE_ADDR") or None) if request is not None else None


def _on_failure(sender, credentials, request=None, **kwargs) -> None:
    from webui.models import AuditEntry

    username, address = credentials.get("username", ""), client_address(request)
    record_failure(username, address)
    AuditEntry.objects.create(username=str(username)[:150], action="login", address=address, outcome="failed")


def _on_login(sender, request, user, **kwargs) -> None:
    clear_failures(user.get_username())


def connect() -> None:
    from django.contrib.auth.signals import user_logged_in, user_login_failed

    user_login_failed.connect(_on_failure, dispatch_uid="caisson-login-failed")
    user_logged_in.connect(_on_login, dispatch_uid="caisson-logged-in")
