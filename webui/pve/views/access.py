"""``/access/ticket`` (log in, renew), ``/access/users`` and ``/access/acl`` (read)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import transaction

from webui.access import audit, check_grant, check_manages
from webui.models import AccessEntry, ApiToken, Role
from webui.privileges import validate_path
from webui.pve import auth
from webui.pve.errors import PveError, param_error, pve_path
from webui.pve.router import Call, route
from webui.pve.schema import P
from webui.pve.views.common import need
from webui.userid import REALM


@route("/access", "GET", public=True)
def access_index(call: Call):
    call.params({})
    return [{"subdir": s} for s in ("ticket", "users", "acl")]


@route("/access/ticket", "GET", public=True)
def ticket_check(call: Call):
    call.params({})
    return None


@route("/access/ticket", "POST", public=True)
def ticket(call: Call):
    spec = {
        "username": P(optional=False, max_length=64),
        "password": P(optional=False, max_length=4096),
        "realm": P(),
        "otp": P(),
        "path": P(),
        "privs": P(),
        "new-format": P("boolean"),
        "tfa-challenge": P(),
    }
    params = call.params(spec)
    username = params["username"]
    if params.get("realm") and "@" not in username:
        username = f"{username}@{params['realm']}"
    return auth.login(call.request, username, params["password"])


@route("/access/users", "GET")
def users(call: Call):
    params = call.params({"enabled": P("boolean"), "full": P("boolean")})
    need(call, "Permissions.Modify")  # Proxmox lists the users one may administer (User.Modify)
    rows = get_user_model().objects.order_by("username").prefetch_related("groups", "api_tokens")
    if params.get("enabled") is not None:
        rows = rows.filter(is_active=params["enabled"])
    out = []
    for user in rows:
        item = {
            "userid": f"{user.username}@{REALM}",
            "enable": 1 if user.is_active else 0,
            "expire": 0,
            "email": user.email,
            "firstname": user.first_name,
            "lastname": user.last_name,
            "groups": ",".join(g.name for g in user.groups.all()),
        }
        if params.get("full"):
            item["tokens"] = [
                {"tokenid": t.name, "comment": t.comment, "privsep": 1 if t.privsep else 0}
                for t in user.api_tokens.all()
            ]
        out.append(item)
    return out


@route("/access/acl", "GET")
def acl(call: Call):
    call.params({})
    out = []
    for entry in AccessEntry.objects.select_related("user", "group", "token__user", "role"):
        if not call.access.can("Permissions.Modify", path=entry.path) and not call.access.can(
            "Sys.Audit", path=entry.path
        ):
            continue
        if entry.user_id:
            kind, ugid = "user", f"{entry.user.username}@{REALM}"
        elif entry.token_id:
            kind, ugid = "token", f"{entry.token.user.username}@{REALM}!{entry.token.name}"
        else:
            kind, ugid = "group", entry.group.name
        out.append(
            {
                "path": pve_path(entry.path),
                "roleid": entry.role.name,
                "type": kind,
                "ugid": ugid,
                "propagate": 1 if entry.propagate else 0,
            }
        )
    return out


# ---- API tokens and ACL changes: Caisson's rules (webui.access), Proxmox's parameters -------------------------
TOKENID = P(optional=False, pattern=r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
USERID = P(optional=False, pattern=r"[^\s:/!@]+@[A-Za-z][A-Za-z0-9.\-_]*")


def _token_owner(call: Call, userid: str):
    """A user's tokens are theirs to manage, or a permission manager's (never a superuser's but by one)."""
    user = auth.user_of(userid)
    if user is None:
        raise PveError(500, f"no such user ('{userid}')")
    if user != call.access.user:
        need(call, "Permissions.Modify")
        check_manages(call.access, user)
    return user


def _token_info(token) -> dict:
    return {
        "tokenid": token.name,
        "comment": token.comment,
        "expire": int(token.expires.timestamp()) if token.expires else 0,
        "privsep": 1 if token.privsep else 0,
    }


@route("/access/users/{userid}/token", "GET")
def tokens(call: Call):
    user = _token_owner(call, call.params({"userid": USERID})["userid"])
    return [_token_info(t) for t in ApiToken.objects.filter(user=user)]


@route("/access/users/{userid}/token/{tokenid}", "POST")
def token_create(call: Call):
    spec = {"userid": USERID, "tokenid": TOKENID, "comment": P(max_length=255), "expire": P("integer", minimum=0)}
    params = call.params({**spec, "privsep": P("boolean", default=True)})  # Proxmox's default: separated
    user = _token_owner(call, params["userid"])
    if ApiToken.objects.filter(user=user, name=params["tokenid"]).exists():
        raise param_error({"tokenid": f"Token '{params['tokenid']}' for user '{params['userid']}' already exists."})
    expires = datetime.fromtimestamp(params["expire"], UTC) if params.get("expire") else None
    token, value = ApiToken.issue(user, params["tokenid"], params.get("comment", ""), expires, params["privsep"])
    audit(call.access, "token.create", "/", call.address, token=str(token))
    return {
        "full-tokenid": f"{params['userid']}!{token.name}",
        "info": _token_info(token),
        "value": value.split("=", 1)[1],
    }


@route("/access/users/{userid}/token/{tokenid}", "DELETE")
def token_delete(call: Call):
    params = call.params({"userid": USERID, "tokenid": TOKENID})
    user = _token_owner(call, params["userid"])
    token = ApiToken.objects.filter(user=user, name=params["tokenid"]).first()
    if token is None:
        raise PveError(500, f"no such token '{params['tokenid']}' for user '{params['userid']}'")
    audit(call.access, "token.delete", "/", call.address, token=str(token))
    token.delete()


def _subjects(params: dict) -> list[dict]:
    """The users, groups and tokens an ACL change names, as ``AccessEntry`` fields."""
    out = []
    for userid in _split(params.get("users")):
        user = auth.user_of(userid)
        if user is None:
            raise param_error({"users": f"user '{userid}' does not exist"})
        out.append({"user": user})
    for name in _split(params.get("groups")):
        group = Group.objects.filter(name=name).first()
        if group is None:
            raise param_error({"groups": f"group '{name}' does not exist"})
        out.append({"group": group})
    for full in _split(params.get("tokens")):
        userid, _, name = full.partition("!")
        owner = auth.user_of(userid)
        token = ApiToken.objects.filter(user=owner, name=name).first() if owner else None
        if token is None:
            raise param_error({"tokens": f"token '{full}' does not exist"})
        out.append({"token": token})
    return out


def _split(value) -> list[str]:
    return [v for v in re.split(r"[,;\s]+", value or "") if v]


@route("/access/acl", "PUT")
def acl_change(call: Call):
    """Grant (or with ``delete``, revoke) ``roles`` on ``path`` to users, groups and tokens; Caisson's rules:
    Permissions.Modify on ``/``, no more than the caller holds there, never a superuser but by one."""
    spec = {"path": P(optional=False, max_length=255), "roles": P(optional=False), "users": P(), "groups": P()}
    params = call.params({**spec, "tokens": P(), "propagate": P("boolean", default=True), "delete": P("boolean")})
    need(call, "Permissions.Modify")
    path = params["path"]
    path = "/ct/" + path[5:] if path.startswith("/vms/") else path
    try:
        validate_path(path)
    except ValidationError:
        raise param_error({"path": f"invalid ACL path '{params['path']}'"}) from None
    roles = []
    for name in _split(params["roles"]):
        role = Role.objects.filter(name=name).first()
        if role is None:
            raise param_error({"roles": f"role '{name}' does not exist"})
        roles.append(role)
    subjects = _subjects(params)
    if not subjects:
        raise param_error({"users": "name at least one user, group or token"})
    for role in roles:
        what = f"{'revoking' if params.get('delete') else 'granting'} role '{role.name}'"
        check_grant(call.access, path, role.privileges, what)
    with transaction.atomic():
        for subject in subjects:
            check_manages(call.access, subject.get("user") or getattr(subject.get("token"), "user", None))
            for role in roles:
                rows = AccessEntry.objects.filter(path=path, role=role, **subject)
                if params.get("delete"):
                    rows.delete()
                elif not rows.exists():
                    AccessEntry.objects.create(path=path, role=role, propagate=params["propagate"], **subject)
                action = "acl.revoke" if params.get("delete") else "acl.grant"
                audit(call.access, action, path, call.address, role=role.name, subject=_subject_name(subject))
    return None


def _subject_name(subject: dict) -> str:
    if "user" in subject:
        return subject["user"].username
    if "group" in subject:
        return f"group {subject['group'].name}"
    return f"token {subject['token']}"
