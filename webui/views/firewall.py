"""Firewall pages: Datacenter -> Firewall, Node -> Firewall, a container's Firewall tab.

Each shows the level's options, rules (delete by position, add with a form), the file in Proxmox's syntax
(editable as a whole: the place for aliases, IP sets and security groups) and the logged packets.  The
changes go through ``webui.actions.firewall`` (rights, checks, one job per node).
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_POST

from webui.access import access_for
from webui.actions import firewall as actions
from webui.models import Container, Node
from webui.views.common import client_address, run_action

LEVEL_OPTIONS = {
    "cluster": ("enable", "policy_in", "policy_out", "ebtables", "log_ratelimit"),
    "host": ("enable", "log_level_in", "log_level_out", "nosmurfs", "tcpflags", "ndp"),
    "ct": ("enable", "policy_in", "policy_out", "log_level_in", "log_level_out", "macfilter", "ipfilter", "dhcp"),
}
RULE_TEXT = ("macro", "iface", "source", "dest", "proto", "dport", "sport", "log", "comment")


def _scope(request, level: str, key: str | None) -> actions.Scope:
    if level == "ct":
        container = Container.objects.select_related("node").filter(ctid=int(key)).first()
        if container is None or not access_for(request).can("VM.Audit", container):
            raise Http404(f"CT {key} does not exist")
        return actions.Scope("ct", container=container)
    if level == "host":
        return actions.Scope("host", node=get_object_or_404(Node, name=key))
    return actions.Scope("cluster")


def firewall_page(request, level: str, key: str | None = None, ctid: int | None = None):
    key = str(ctid) if ctid is not None else key
    scope = _scope(request, level, key)
    access = access_for(request)
    if not access.can(scope.privilege(False), scope.obj, "/"):
        raise PermissionDenied(f"permission denied: {scope.privilege(False)} is required to see this firewall")
    conf = actions.config_of(scope)
    title = {"cluster": "Datacenter", "host": f"Node {key}", "ct": f"CT {key}"}[level]
    return render(
        request,
        "webui/firewall.html",
        {
            "scope": scope,
            "title": title,
            "key": key or "-",
            "conf": conf,
            "rules": [(i, r, actions.fwconfig.format_rule(r)) for i, r in enumerate(conf.rules)],
            "text": actions.text_of(scope),
            "options": [(name, conf.options.get(name, "")) for name in LEVEL_OPTIONS[scope.kind]],
            "log_levels": [level for level in actions.fwconfig.LOG_LEVELS if level != "nolog"],
            "macros": sorted(actions.fwconfig.macros(), key=str.lower),
            "groups": sorted(actions.config_of(actions.Scope("cluster")).groups),
            "log": actions.log_lines(scope)[-100:],
            "can_modify": access.can(scope.privilege(True), scope.obj, "/"),
        },
    )


@require_POST
def firewall_action(request, level: str, key: str, op: str):
    """``op``: save (the whole text), add (a rule), delete (``pos``), options."""
    scope = _scope(request, level, None if key == "-" else key)
    access, address, post = access_for(request), client_address(request), request.POST

    def run():
        if op == "save":
            return actions.save(access, scope, post.get("text", "").replace("\r\n", "\n"), address)[0]
        if op == "add":
            fields = {"type": post.get("type", ""), "action": post.get("action", "").strip()}
            fields |= {k: post[k] for k in RULE_TEXT if post.get(k, "").strip()}
            fields["enable"] = post.get("enable", "1") in ("1", "on")
            return actions.add_rule(access, scope, fields, address)[0]
        if op == "delete":
            pos = post.get("pos", "")
            if not pos.isdigit():
                raise PermissionDenied("no rule position given")
            return actions.delete_rule(access, scope, int(pos), address)[0]
        if op == "options":
            options = {k: post.get(k, "").strip() for k in LEVEL_OPTIONS[scope.kind] if k in post}
            return actions.set_options(access, scope, options, address)[0]
        raise Http404(f"no firewall action '{op}'")

    return run_action(request, run, f"{scope.filename}: change queued (job {{job.pk}})", request.path)
