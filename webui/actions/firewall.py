"""The firewall at its three levels, as Proxmox's: the datacenter (``cluster.fw``, Sys.Audit/Sys.Modify on
``/``), a node (``host.fw``, the same on the node) and a container (``<vmid>.fw``, VM.Audit to read and
VM.Config.Network to change, on the container).

A change is checked here as the node will check it (``engine.network.fwconfig``; a container's rules are
also compiled against the datacenter's groups, aliases and IP sets, so a rule naming a missing one is
refused at once), written back in Proxmox's layout and sent to the node(s) as ``fwset`` jobs, which apply it
live.  What is shown comes from the mirror (``FirewallFile``), never from a node's disk.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import ValidationError

from engine.errors import ValidationError as EngineValidationError
from engine.network import fwconfig
from webui.access import Access, require
from webui.models import Container, FirewallFile, Job, Node
from webui.models.queue import submit

RULE_FIELDS = ("type", "action", "macro", "iface", "source", "dest", "proto", "dport", "sport", "log", "icmp_type")
RULE_FIELDS += ("comment", "enable")


@dataclass
class Scope:
    """Where a firewall file lives: ``level`` cluster, host or ct, with its node or container."""

    level: str
    node: Node | None = None
    container: Container | None = None

    @property
    def kind(self) -> str:
        return "ct" if self.level == "ct" else self.level

    @property
    def filename(self) -> str:
        return {"cluster": "cluster.fw", "host": "host.fw"}.get(self.level) or f"{self.container.ctid}.fw"

    @property
    def obj(self):
        return self.container or self.node

    def privilege(self, write: bool) -> str:
        if self.level == "ct":
            return "VM.Config.Network" if write else "VM.Audit"
        return "Sys.Modify" if write else "Sys.Audit"

    def check(self, access: Access, write: bool, address: str | None = None) -> None:
        require(access, self.privilege(write), self.obj, path="/", address=address)


def text_of(scope: Scope) -> str:
    rows = FirewallFile.objects.filter(name=scope.filename)
    if scope.level != "cluster":
        rows = rows.filter(node=scope.container.node if scope.container else scope.node)
    row = rows.order_by("-updated").first()
    return row.text if row else ""


def config_of(scope: Scope) -> fwconfig.FwConfig:
    return fwconfig.parse(text_of(scope), scope.kind, strict=False)


def _checked(scope: Scope, text: str) -> str:
    """The text parsed strictly and written back in Proxmox's layout; a container's rules compiled too."""
    from engine.network.fwcompile import compile_policy

    try:
        conf = fwconfig.parse(text, scope.kind)
        if scope.level == "ct":
            cluster = config_of(Scope("cluster"))
            compile_policy(conf, cluster if text_of(Scope("cluster")) else None, strict=True)
    except EngineValidationError as exc:
        raise ValidationError({exc.key or "text": [str(exc)]}) from None
    return fwconfig.render(conf)


def save(access: Access, scope: Scope, text: str, address: str | None = None) -> list[Job]:
    """Replace the whole file (empty removes it); one job on the container's node, on the node, or on every
    node for the datacenter's file."""
    scope.check(access, write=True, address=address)
    if not isinstance(text, str):
        raise ValidationError({"text": ["the firewall file's text"]})
    canonical = _checked(scope, text) if text.strip() else ""
    if scope.level == "cluster":
        nodes = list(Node.objects.all())
        target, path = "cluster", "/"
    else:
        nodes = [scope.container.node if scope.container else scope.node]
        target = str(scope.container.ctid) if scope.container else scope.node.name
        path = scope.obj.path
    params = {"level": scope.level, "text": canonical}
    return [submit("fwset", node, path, target, user=access.user, params=params, address=address) for node in nodes]


def rule_from(fields: dict, kind: str) -> fwconfig.Rule:
    unknown = sorted(set(fields) - set(RULE_FIELDS) - {"pos"})
    if unknown:
        raise ValidationError({key: [f"unknown field (fields: {', '.join(RULE_FIELDS)})"] for key in unknown})
    values = {k: (str(v).strip() or None) if isinstance(v, str) else v for k, v in fields.items() if k != "pos"}
    if not values.get("type") or not values.get("action"):
        raise ValidationError({k: ["this field is required"] for k in ("type", "action") if not values.get(k)})
    if values.get("macro"):
        values["action"] = f"{values.pop('macro')}({values['action']})"
    values.pop("macro", None)
    enable = values.pop("enable", True)
    if not isinstance(enable, bool):
        raise ValidationError({"enable": ["true or false"]})
    try:
        return fwconfig.check_rule(fwconfig.Rule(**values, enable=enable), kind)
    except ValueError as exc:
        key, message = exc.args if len(exc.args) == 2 else ("rule", str(exc))
        raise ValidationError({key: [message]}) from None
    except TypeError:
        raise ValidationError({"rule": ["malformed rule"]}) from None


def add_rule(access: Access, scope: Scope, fields: dict, address: str | None = None) -> list[Job]:
    """Insert one rule (at ``pos``, 0 the first; at the end without), as Proxmox's POST .../rules."""
    scope.check(access, write=True, address=address)
    conf = config_of(scope)
    rule = rule_from(fields, scope.kind)
    pos = fields.get("pos")
    if pos is not None and (isinstance(pos, bool) or not isinstance(pos, int) or not 0 <= pos <= len(conf.rules)):
        raise ValidationError({"pos": [f"a position from 0 to {len(conf.rules)}"]})
    conf.rules.insert(len(conf.rules) if pos is None else pos, rule)
    return save(access, scope, fwconfig.render(conf), address)


def delete_rule(access: Access, scope: Scope, pos: int, address: str | None = None) -> list[Job]:
    scope.check(access, write=True, address=address)
    conf = config_of(scope)
    if not 0 <= pos < len(conf.rules):
        raise ValidationError({"pos": [f"no rule at position {pos} ({len(conf.rules)} rule(s))"]})
    del conf.rules[pos]
    return save(access, scope, fwconfig.render(conf), address)


def set_options(access: Access, scope: Scope, options: dict, address: str | None = None) -> list[Job]:
    """Change options (a value of null or "" deletes one), as Proxmox's PUT .../options."""
    scope.check(access, write=True, address=address)
    conf = config_of(scope)
    errors = {}
    for key, value in options.items():
        if value in (None, ""):
            conf.options.pop(key, None)
            continue
        try:
            name, clean = fwconfig._option(scope.kind, f"{key}: {value}")  # noqa: SLF001 - the file's own check
            conf.options[name] = clean
        except ValueError as exc:
            errors[key] = [exc.args[-1]]
    if errors:
        raise ValidationError(errors)
    return save(access, scope, fwconfig.render(conf), address)


def log_lines(scope: Scope) -> list[dict]:
    """The node's logged packets (``Node.info["fwlog"]``), a container's own for the ct level."""
    nodes = [scope.container.node] if scope.container else [scope.node] if scope.node else list(Node.objects.all())
    lines = [dict(line, node=n.name) for n in nodes for line in (n.info or {}).get("fwlog", [])]
    if scope.container:
        lines = [line for line in lines if line.get("ctid") == scope.container.ctid]
    return sorted(lines, key=lambda line: line.get("time", ""))
