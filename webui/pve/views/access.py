"""``/access/ticket`` (log in, renew), ``/access/users`` and ``/access/acl`` (read)."""

from __future__ import annotations

from django.contrib.auth import get_user_model

from webui.models import AccessEntry
from webui.pve import auth
from webui.pve.errors import pve_path
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
