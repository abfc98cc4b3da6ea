"""A container's firewall as nftables will enforce it: its ``<vmid>.fw`` with the datacenter's
``cluster.fw`` (security groups, aliases, IP sets, the datacenter's ``enable``) folded into one
:class:`~engine.network.firewall.FirewallPolicy`.

What Proxmox resolves when it compiles its rules is resolved here: ``GROUP <name>`` rules become the
group's rules (with the referencing rule's ``-i``), macros their protocol and ports, aliases
(``guest/`` the container's, ``dc/`` the datacenter's, unscoped the container's first) and ``+ipset``
references their addresses, service names their port numbers.  Without a ``cluster.fw`` a
container's file stands alone; with one whose ``enable`` is 0 no container is filtered (Proxmox's
datacenter switch).  A file loaded for enforcement is read leniently: a rule the kernel side cannot
take is skipped and named in ``warnings`` (as pve-firewall logs and skips it); ``strict`` refuses it.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import ValidationError
from engine.network import fwconfig
from engine.network.firewall import FirewallPolicy, FirewallRule, check_rule
from engine.network.fwconfig import FwConfig, Rule

# The engine's field names (firewall.check_rule) as the file's editors name them (fwconfig.Rule).
KEYS = {"p": "proto", "i": "iface", "direction": "type", "icmp-type": "icmp_type"}


def firewall_dir(root: Path | str) -> Path:
    return Path(root) / "firewall"


def file_of(root: Path | str, level: str, ctid: int | None = None) -> Path:
    """``cluster.fw``, ``host.fw`` or ``<ctid>.fw`` under the node's firewall directory."""
    name = {"cluster": "cluster.fw", "host": "host.fw"}.get(level) or f"{int(ctid)}.fw"
    return firewall_dir(root) / name


def load(root: Path | str, level: str, ctid: int | None = None, strict: bool = False) -> FwConfig | None:
    path = file_of(root, level, ctid)
    if not path.exists():
        return None
    return fwconfig.parse(path.read_text(), "ct" if level == "ct" else level, strict=strict)


@dataclass
class Compiled:
    policy: FirewallPolicy
    warnings: list[str] = field(default_factory=list)


def policy_for(root: Path | str, ctid: int) -> Compiled:
    """What ``engine.network.container`` applies for this container."""
    return compile_policy(load(root, "ct", ctid), load(root, "cluster"))


def parse_rules(text: str, cluster: FwConfig | None = None) -> FirewallPolicy:
    """A container's file, checked strictly as its editors check it (the CLI's ``firewall --rules``)."""
    return compile_policy(fwconfig.parse(text, "ct"), cluster, strict=True).policy


def compile_policy(ct: FwConfig | None, cluster: FwConfig | None, strict: bool = False) -> Compiled:
    if cluster is not None and not cluster.enabled:
        return Compiled(FirewallPolicy(enabled=False), ["the datacenter firewall is disabled (cluster.fw enable: 0)"])
    if ct is None:  # no file: anti-spoofing only, every packet of the container's own let through
        return Compiled(FirewallPolicy(enabled=True, policy_in="ACCEPT", policy_out="ACCEPT"))
    opts = ct.options
    policy = FirewallPolicy(
        enabled=ct.enabled,
        policy_in=opts.get("policy_in", "DROP"),
        policy_out=opts.get("policy_out", "ACCEPT"),
        **{flag: opts[flag] == "1" for flag in ("macfilter", "ipfilter", "dhcp", "ndp", "radv") if flag in opts},
        log_in=_level(opts.get("log_level_in")),
        log_out=_level(opts.get("log_level_out")),
    )
    result = Compiled(policy, [*ct.warnings, *(cluster.warnings if cluster else [])])
    for number, rule in enumerate(ct.rules, 1):
        if not rule.enable:
            continue
        try:
            policy.rules.extend(_expand(rule, ct, cluster))
        except ValueError as exc:
            key, message = exc.args if len(exc.args) == 2 else ("rule", str(exc))
            key = KEYS.get(key.lstrip("-"), key.lstrip("-"))
            text = f"rule {number} ({fwconfig.format_rule(rule)}): {key}: {message}"
            if strict:
                raise ValidationError(text, key=key) from None
            result.warnings.append(text + " (skipped)")
    return result


def compile_host(host: FwConfig | None, cluster: FwConfig | None, strict: bool = False) -> Compiled:
    """The node level (``engine.network.hostfw``): ``host.fw``'s rules under the datacenter's ``policy_in``.
    A rule's ``-i`` (a host interface) is not kept: only the node's bridges are filtered at all."""
    if host is None or cluster is None or not cluster.enabled or host.options.get("enable", "0") == "0":
        return Compiled(FirewallPolicy(enabled=False))
    policy = FirewallPolicy(enabled=True, policy_in=cluster.options.get("policy_in", "DROP"))
    result = Compiled(policy, [*host.warnings])
    for number, rule in enumerate(host.rules, 1):
        if not rule.enable:
            continue
        try:
            policy.rules.extend(_expand(fwconfig.Rule(**{**rule.__dict__, "iface": None}), host, cluster))
        except ValueError as exc:
            key, message = exc.args if len(exc.args) == 2 else ("rule", str(exc))
            text = f"host rule {number} ({fwconfig.format_rule(rule)}): {key}: {message}"
            if strict:
                raise ValidationError(text, key=KEYS.get(key.lstrip("-"), key.lstrip("-"))) from None
            result.warnings.append(text + " (skipped)")
    return result


def _level(value: str | None) -> str | None:
    return None if value in (None, "", "nolog") else value


def _expand(rule: Rule, ct: FwConfig, cluster: FwConfig | None) -> list[FirewallRule]:
    if rule.type == "group":
        group = (cluster.groups if cluster else {}).get(rule.action)
        if group is None:
            raise ValueError("group", f"no security group '{rule.action}' in cluster.fw")
        rules = []
        for member in group:
            if member.enable:
                member = fwconfig.Rule(**{**member.__dict__, "iface": rule.iface})
                rules += _expand(member, ct, cluster)
        return rules
    entries = fwconfig.macros()[rule.macro] if rule.macro else [(None, None, None)]
    rules = []
    for proto, dport, sport in entries:
        proto = rule.proto or proto
        dport, sport = rule.dport or dport, rule.sport or sport
        icmp_type = rule.icmp_type
        if proto in ("icmp", "icmpv6", "ipv6-icmp") and dport and not icmp_type:
            icmp_type, dport = dport, None  # Proxmox takes an ICMP type in -dport
        rules.append(
            check_rule(
                FirewallRule(
                    rule.type,
                    rule.action,
                    proto,
                    _ports(dport, proto),
                    _addresses(rule.source, ct, cluster),
                    rule.comment,
                    rule.iface,
                    _addresses(rule.dest, ct, cluster),
                    _ports(sport, proto),
                    icmp_type,
                    rule.log,
                )
            )
        )
    return rules


def _ports(value: str | None, proto: str | None) -> str | None:
    """Service names as numbers (``ssh`` -> 22), as Proxmox reads them from /etc/services."""
    if not value:
        return None
    out = []
    for item in value.split(","):
        parts = []
        for part in item.split(":"):
            if part.isdigit():
                parts.append(part)
                continue
            try:
                parts.append(str(socket.getservbyname(part, proto if proto in ("tcp", "udp") else None)))
            except OSError:
                raise ValueError("-dport", f"unknown service '{part}'") from None
        out.append(":".join(parts))
    return ",".join(out)


def _addresses(value: str | None, ct: FwConfig, cluster: FwConfig | None) -> str | None:
    """Aliases and IP sets resolved to addresses (comma-separated), addresses as they are."""
    if not value:
        return None
    if value.startswith("+"):
        scope, _, name = value[1:].rpartition("/")
        sets = [c for c, s in ((ct, "guest"), (cluster, "dc")) if c is not None and scope in ("", s)]
        entries = next((c.ipsets[name.lower()] for c in sets if name.lower() in c.ipsets), None)
        if entries is None:
            raise ValueError("-source", f"no IP set '{name}'")
        if any(nomatch for nomatch, _, _ in entries):
            raise ValueError("-source", f"IP set '{name}' has '!' (nomatch) entries, which are not supported")
        if not entries:
            raise ValueError("-source", f"IP set '{name}' is empty: the rule matches nothing")
        return ",".join(_alias(cidr, ct, cluster) for _, cidr, _ in entries)
    return ",".join(_alias(item, ct, cluster) for item in value.split(","))


def _alias(item: str, ct: FwConfig, cluster: FwConfig | None) -> str:
    scope, _, name = item.rpartition("/")
    if not name[:1].isalpha() or ":" in name or (scope and scope not in ("dc", "guest")):
        return item
    for conf, where in ((ct, "guest"), (cluster, "dc")):
        if conf is not None and scope in ("", where) and name.lower() in conf.aliases:
            return conf.aliases[name.lower()][1]
    raise ValueError("-source", f"no alias '{item}'")
