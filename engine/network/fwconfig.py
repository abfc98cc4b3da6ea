"""Proxmox's firewall files, parsed and written as pve-firewall does: ``cluster.fw`` (the datacenter:
options, aliases, IP sets, rules, security groups), ``host.fw`` (the node: options, rules) and
``<vmid>.fw`` (a container: options, aliases, IP sets, rules).

The files live under ``<state root>/firewall/``; a node's agent reads them, the web tier edits them
through jobs.  Writing follows pve-firewall's layout: ``[OPTIONS]``, ``[ALIASES]`` (sorted by name),
``[IPSET <name>]`` sections (sorted, entries sorted by address), ``[RULES]``, then ``[group <name>]``
sections (sorted), each header followed by a blank line and each section by one.  Options are
written sorted by name (pve-firewall writes them in Perl's hash order, which varies from run to run).

``parse(..., strict=True)`` refuses the first bad line naming it (the editors' check);
``strict=False`` skips bad lines with a warning, as pve-firewall does when it loads a file.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

from engine.errors import ValidationError

KINDS = ("cluster", "host", "ct")
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]+$")
GROUP_MAX, SET_MAX, ALIAS_MAX = 20, 64, 64
LOG_LEVELS = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug", "nolog")
ACTIONS = ("ACCEPT", "DROP", "REJECT")
FLAGS = {
    "ct": ("enable", "dhcp", "ndp", "radv", "macfilter", "ipfilter", "ips"),
    "host": (
        "enable",
        "nosmurfs",
        "tcpflags",
        "ndp",
        "log_nf_conntrack",
        "nf_conntrack_allow_invalid",
        "protection_synflood",
        "nftables",
    ),
    "cluster": ("ebtables",),
}
POLICIES = {"ct": ("policy_in", "policy_out"), "host": (), "cluster": ("policy_in", "policy_out", "policy_forward")}
LEVEL_OPTIONS = {
    "ct": ("log_level_in", "log_level_out"),
    "host": ("log_level_in", "log_level_out", "log_level_forward", "tcp_flags_log_level", "smurf_log_level"),
    "cluster": (),
}
NUMBERS = {
    "host": (
        "nf_conntrack_max",
        "nf_conntrack_tcp_timeout_established",
        "nf_conntrack_tcp_timeout_syn_recv",
        "protection_synflood_rate",
        "protection_synflood_burst",
        "protection_limit",
    ),
    "cluster": ("enable",),
    "ct": (),
}
PORT = re.compile(r"^([0-9]{1,5}|[a-z][a-z0-9-]*)(:([0-9]{1,5}|[a-z][a-z0-9-]*))?$")


@cache
def macros() -> dict[str, list[tuple[str | None, str | None, str | None]]]:
    """Proxmox's macros (name -> (proto, dport, sport) each), from ``fw_macros.json``."""
    data = json.loads((Path(__file__).with_name("fw_macros.json")).read_text())
    return {name: [tuple(row) for row in rows] for name, rows in data.items()}


def macro_name(name: str) -> str | None:
    """The macro's own spelling (Proxmox matches names without regard to case)."""
    return {k.lower(): k for k in macros()}.get(name.lower())


@dataclass
class Rule:
    type: str  # in | out | group
    action: str  # ACCEPT | DROP | REJECT, or the security group's name for a group rule
    macro: str | None = None
    iface: str | None = None
    source: str | None = None
    dest: str | None = None
    proto: str | None = None
    dport: str | None = None
    sport: str | None = None
    log: str | None = None
    icmp_type: str | None = None
    comment: str | None = None
    enable: bool = True


@dataclass
class FwConfig:
    kind: str
    options: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, tuple[str, str, str | None]] = field(default_factory=dict)  # lower name -> (name, cidr, note)
    ipsets: dict[str, list[tuple[bool, str, str | None]]] = field(default_factory=dict)  # name -> (nomatch, cidr, note)
    ipset_comments: dict[str, str] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)
    groups: dict[str, list[Rule]] = field(default_factory=dict)
    group_comments: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return self.options.get("enable", "0") not in ("0", "")


# ---- parsing ----------------------------------------------------------------------------------
def parse(text: str, kind: str, strict: bool = True) -> FwConfig:
    if kind not in KINDS:
        raise ValueError(kind)
    conf, section, name = FwConfig(kind), None, None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            header = re.fullmatch(r"\[(\w+)(?:\s+(\S+))?\]\s*(?:#\s*(.*?)\s*)?", line)
            if header:
                section, name = _section(conf, header.group(1).lower(), header.group(2), header.group(3))
            elif section is None:
                raise ValueError("section", "a line before any [SECTION]")
            elif section == "options":
                key, value = _option(kind, line)
                conf.options[key] = value
            elif section == "aliases":
                alias = _alias(line)
                conf.aliases[alias[0].lower()] = alias
            elif section == "ipset":
                conf.ipsets[name].append(_ipset_entry(line, [e[1] for e in conf.ipsets[name]]))
            else:
                rule = parse_rule(line, "group" if section == "group" else kind)
                (conf.groups[name] if section == "group" else conf.rules).append(rule)
        except ValueError as exc:
            key, message = exc.args if len(exc.args) == 2 else ("line", str(exc))
            if strict:
                raise ValidationError(f"line {number}: {key}: {message}: {line!r}", key=key) from None
            conf.warnings.append(f"line {number}: {message} (skipped): {line!r}")
            if header:
                section = name = None
    return conf


def _section(conf: FwConfig, word: str, arg: str | None, comment: str | None) -> tuple[str, str | None]:
    allowed = {"cluster": {"options", "aliases", "ipset", "rules", "group"}, "host": {"options", "rules"}}
    if word not in allowed.get(conf.kind, {"options", "aliases", "ipset", "rules"}):
        raise ValueError("section", f"[{word}] has no place in a {conf.kind} firewall file")
    if word in ("ipset", "group"):
        name = (arg or "").lower()
        limit = GROUP_MAX if word == "group" else SET_MAX
        if not NAME.match(name) or len(name) > limit:
            raise ValueError(
                word, f"'{arg}' is not a {word} name (a letter, then letters, digits, - and _, {limit} at most)"
            )
        target, notes = (conf.groups, conf.group_comments) if word == "group" else (conf.ipsets, conf.ipset_comments)
        target[name] = []
        if comment:
            notes[name] = comment
        return word, name
    if arg:
        raise ValueError("section", f"[{word}] takes no name")
    return word, None


def _option(kind: str, line: str) -> tuple[str, str]:
    key, colon, value = (part.strip() for part in line.partition(":"))
    key = key.lower()
    if not colon:
        raise ValueError(key, "expected 'name: value'")
    if key in FLAGS[kind] and value in ("0", "1"):
        return key, value
    if key in POLICIES[kind] and value.upper() in ACTIONS:
        return key, value.upper()
    if key in LEVEL_OPTIONS[kind] and (value.lower() in LOG_LEVELS or value == ""):
        return key, value.lower()
    if key in NUMBERS[kind] and value.isdigit():
        return key, str(int(value))
    if kind == "cluster" and key == "log_ratelimit" and value and " " not in value:
        return key, value
    if kind == "ct" and key == "ips_queues" and re.fullmatch(r"\d+(:\d+)?", value):
        return key, value
    if kind == "host" and key == "nf_conntrack_helpers" and re.fullmatch(r"[a-z0-9-]+(,[a-z0-9-]+)*", value.lower()):
        return key, value.lower()
    if kind == "ct" and key == "layer2_protocols" and re.fullmatch(r"[A-Za-z0-9_]+(,[A-Za-z0-9_]+)*", value):
        return key, value
    raise ValueError(key, f"'{value}' is not a value of this option, or no such option in a {kind} file")


def ip_or_cidr(value: str, key: str) -> str:
    """An address or network as Proxmox stores it (a host's /32 or /128 dropped)."""
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(key, f"'{value}' is not an IP address or CIDR network") from None
    if "/" in value and net.prefixlen == 0:
        raise ValueError(key, "a zero prefix is not allowed")
    return value.removesuffix("/32") if net.version == 4 else value.removesuffix("/128")


def _alias(line: str) -> tuple[str, str, str | None]:
    body, _, comment = line.partition("#")
    words = body.split()
    if len(words) != 2 or not NAME.match(words[0]) or len(words[0]) > ALIAS_MAX:
        raise ValueError("alias", "expected '<name> <address or CIDR>'")
    return words[0], ip_or_cidr(words[1], "alias"), comment.strip() or None


def _ipset_entry(line: str, seen: list[str]) -> tuple[bool, str, str | None]:
    body, _, comment = line.partition("#")
    match = re.fullmatch(r"(!)?\s*(\S+)\s*", body)
    if not match:
        raise ValueError("ipset", "expected '[!]<address, CIDR or alias>'")
    cidr = match.group(2)
    if not re.fullmatch(r"(dc/|guest/)?[A-Za-z][A-Za-z0-9_-]+", cidr):
        cidr = ip_or_cidr(cidr, "ipset")
    if cidr in seen:
        raise ValueError("ipset", f"duplicate entry '{cidr}'")
    return bool(match.group(1)), cidr, comment.strip() or None


OPTION_FLAGS = {"-i": "iface", "-p": "proto", "-dport": "dport", "-sport": "sport", "-source": "source"}
OPTION_FLAGS |= {"-dest": "dest", "-log": "log", "-icmp-type": "icmp_type"}


def parse_rule(line: str, kind: str) -> Rule:
    """One rule line; ``kind`` ``group`` for a line inside a security group (no ``-i`` there)."""
    body, _, comment = line.partition("#")
    enable = not body.lstrip().startswith("|")
    words = body.strip().lstrip("|").split()
    if len(words) < 2:
        raise ValueError("rule", "expected '[|]IN|OUT|GROUP <action> [options]'")
    rule = Rule(words[0].lower(), words[1], comment=comment.strip() or None, enable=enable)
    rest = words[2:]
    for index in range(0, len(rest), 2):
        flag = rest[index].lstrip("-")
        attr = OPTION_FLAGS.get(f"-{flag}") or ("proto" if flag == "proto" else None)
        if attr is None or index + 1 == len(rest):
            raise ValueError(attr or rest[index], "unknown option, or an option without a value")
        setattr(rule, attr, rest[index + 1])
    return check_rule(rule, kind)


def check_rule(rule: Rule, kind: str) -> Rule:
    """The rule checked field by field; ValueError(field, message) naming the first bad one."""
    rule = replace(rule, type=str(rule.type).lower())
    if rule.type not in ("in", "out", "group"):
        raise ValueError("type", f"'{rule.type}' is not IN, OUT or GROUP")
    if rule.type == "group":
        if kind == "group":
            raise ValueError("type", "a security group cannot hold another")
        if not NAME.match(str(rule.action)):
            raise ValueError("action", f"'{rule.action}' is not a security group name")
        rule.action = rule.action.lower()
        if any(getattr(rule, k) for k in ("macro", "source", "dest", "proto", "dport", "sport", "log", "icmp_type")):
            raise ValueError("type", "a GROUP rule takes only -i and a comment")
    else:
        macro = re.fullmatch(r"(\S+)\((\w+)\)", str(rule.action))
        if macro:
            rule.macro, rule.action = macro.group(1), macro.group(2)
        rule.action = str(rule.action).upper()
        if rule.action not in ACTIONS:
            raise ValueError("action", f"'{rule.action}' is not one of {', '.join(ACTIONS)}")
        if rule.macro is not None:
            known = macro_name(rule.macro)
            if known is None:
                raise ValueError("macro", f"unknown macro '{rule.macro}'")
            rule.macro = known
    if rule.iface is not None:
        if kind == "group":
            raise ValueError("iface", "a rule inside a security group takes no -i")
        pattern = r"net\d{1,2}" if kind == "ct" else r"[A-Za-z0-9_.-]{1,15}"
        if not re.fullmatch(pattern, rule.iface):
            raise ValueError(
                "iface", f"'{rule.iface}' is not an interface name" + (" like net0" if kind == "ct" else "")
            )
    if rule.proto is not None and not re.fullmatch(r"[a-z][a-z0-9-]*|\d{1,3}", rule.proto.lower()):
        raise ValueError("proto", f"'{rule.proto}' is not a protocol name or number")
    for key in ("dport", "sport"):
        value = getattr(rule, key)
        if value is not None:
            if not rule.proto and not rule.macro:
                raise ValueError(key, "a port needs -p (tcp, udp, ...)")
            for item in value.split(","):
                if not PORT.match(item) or any(p.isdigit() and not 0 <= int(p) <= 65535 for p in item.split(":")):
                    raise ValueError(key, f"'{item}' is not a port, a service name or a range like 1000:2000")
    for key in ("source", "dest"):
        value = getattr(rule, key)
        if value is not None:
            check_address_list(value, key)
    if rule.log is not None and rule.log not in LOG_LEVELS:
        raise ValueError("log", f"'{rule.log}' is not a log level ({', '.join(LOG_LEVELS)})")
    if rule.icmp_type is not None and not re.fullmatch(r"[a-z][a-z0-9-]*|\d{1,3}", rule.icmp_type):
        raise ValueError("icmp_type", f"'{rule.icmp_type}' is not an ICMP type")
    if rule.comment is not None:
        rule.comment = rule.comment.strip() or None
    return rule


def check_address_list(value: str, key: str) -> None:
    """An alias (``dc/``/``guest/`` scoped or not), an IP set (``+name``), or addresses, CIDRs and ranges."""
    if re.fullmatch(r"\+(dc/|guest/)?[A-Za-z][A-Za-z0-9_-]+|(dc/|guest/)?[A-Za-z][A-Za-z0-9_-]+", value):
        return
    for item in value.split(","):
        first, dash, last = item.partition("-")
        try:
            if dash:
                a, b = ipaddress.ip_address(first), ipaddress.ip_address(last)
                if a.version != b.version or a > b:
                    raise ValueError
            else:
                ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(key, f"'{item}' is not an address, CIDR, range, alias or +ipset") from None


# ---- writing ----------------------------------------------------------------------------------
def format_rule(rule: Rule, allow_iface: bool = True) -> str:
    text = ("" if rule.enable else "|") + rule.type.upper()
    text += f" {rule.macro}({rule.action})" if rule.macro else f" {rule.action}"
    if allow_iface and rule.iface:
        text += f" -i {rule.iface}"
    if rule.type != "group":
        for flag, attr in (("-source", "source"), ("-dest", "dest"), ("-p", "proto"), ("-dport", "dport")):
            text += f" {flag} {getattr(rule, attr)}" if getattr(rule, attr) else ""
        text += f" -sport {rule.sport}" if rule.sport else ""
        text += f" -log {rule.log}" if rule.log else ""
        text += f" -icmp-type {rule.icmp_type}" if rule.icmp_type else ""
    return text + (f" # {rule.comment}" if rule.comment else "")


def render(conf: FwConfig) -> str:
    out = ""
    if conf.options:
        out += "[OPTIONS]\n\n" + "".join(f"{k}: {v}\n" for k, v in sorted(conf.options.items())) + "\n"
    if conf.aliases:
        out += "[ALIASES]\n\n"
        out += "".join(
            f"{n} {c}" + (f" # {note}" if note else "") + "\n" for _, (n, c, note) in sorted(conf.aliases.items())
        )
        out += "\n"
    for name in sorted(conf.ipsets):
        note = conf.ipset_comments.get(name)
        out += f"[IPSET {name}]" + (f" # {note}" if note else "") + "\n\n"
        for nomatch, cidr, comment in sorted(conf.ipsets[name], key=lambda e: e[1]):
            out += ("!" if nomatch else "") + cidr + (f" # {comment}" if comment else "") + "\n"
        out += "\n"
    if conf.rules:
        out += "[RULES]\n\n" + "".join(format_rule(r) + "\n" for r in conf.rules) + "\n"
    for name in sorted(conf.groups):
        note = conf.group_comments.get(name)
        out += f"[group {name}]" + (f" # {note}" if note else "") + "\n\n"
        out += "".join(format_rule(r, allow_iface=False) + "\n" for r in conf.groups[name]) + "\n"
    return out
