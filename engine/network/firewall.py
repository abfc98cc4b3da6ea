"""Per-container firewall in nftables, applied live.

One table, ``bridge caisson``.  The bridge family sees every frame a container port sends or
receives, between two containers on the same bridge too, without br_netfilter or its global
sysctls.  Frames a container sends are checked in ``prerouting`` by ``iifname`` of its host veth
(anti-spoofing runs before the bridge learns the source MAC, for traffic to the host and to
other ports alike); frames to it in ``forward`` (from other ports) and ``output`` (from the host)
by ``oifname``.  Two verdict maps, ``out_ports`` and ``in_ports`` (host ifname -> jump), lead to
each port's chains ``ct<ID>i<N>-out`` and ``ct<ID>i<N>-in``.  A map entry may name a veth that
does not exist yet, so the firewall can be in place before the container's first packet.

Every change is one ``nft -f -`` transaction (ruleset text on stdin, no shell): nftables' own
language is complete, pyroute2's nftables support is not.  Kernel limits, probed once with
``nft -c`` and handled rather than failed on:
- stateful filtering needs bridge conntrack (nf_conntrack_bridge); without it replies are let in
  statelessly (TCP segments carrying ACK, ICMP replies and errors): new inbound TCP connections
  are still refused, but UDP answers to a container's own requests need an explicit rule;
- REJECT needs nft_reject_bridge and is allowed only in ``prerouting``: OUT rules reject, IN
  rules (forward/output hooks) and kernels without the module drop instead.
"""

from __future__ import annotations

import fcntl
import functools
import ipaddress
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

from engine.errors import EngineError, ValidationError

TABLE = "caisson"
LOCK_PATH = "/run/lock/caisson-firewall.lock"
ACTIONS = ("ACCEPT", "DROP", "REJECT")
PROTOS = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "icmpv6": "icmpv6", "ipv6-icmp": "icmpv6"}  # name: canonical
FLAGS = ("macfilter", "ipfilter", "dhcp", "ndp", "radv")
LOG_LEVELS = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
LOG_PREFIX = "caisson-fw"  # every logged packet's prefix: "caisson-fw <veth> <in|out> <verdict>: " (the log view)
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


@dataclass
class FirewallRule:
    direction: str  # "in" | "out"
    action: str  # ACCEPT | DROP | REJECT
    proto: str | None = None  # tcp | udp | icmp | icmpv6 | None (any)
    dport: str | None = None  # "22", "1000:2000", "22,80,443"
    source: str | None = None  # address or CIDR, or a comma list of them
    comment: str | None = None
    iface: str | None = None  # "net0": only this NIC of the container
    dest: str | None = None  # as source, for the destination address
    sport: str | None = None  # as dport, for the source port
    icmp_type: str | None = None  # "echo-request", "8": with proto icmp or icmpv6
    log: str | None = None  # a log level: matching packets are logged (see log_prefix) before the verdict


@dataclass
class FirewallPolicy:
    enabled: bool
    policy_in: str = "DROP"
    policy_out: str = "ACCEPT"
    rules: list[FirewallRule] = field(default_factory=list)
    macfilter: bool = True  # a container sends only from its own MAC
    ipfilter: bool = True  # ... and only from its own addresses
    dhcp: bool = True  # DHCP client traffic passes whatever the policy
    ndp: bool = True  # IPv6 neighbour discovery passes whatever the policy
    radv: bool = False  # may the container send router advertisements
    log_in: str | None = None  # log level of packets the in policy decides (None: not logged)
    log_out: str | None = None


class Port(NamedTuple):
    host_ifname: str  # veth<ID>i<N>
    mac: str
    ipv4: Sequence[str] = ()
    ipv6: Sequence[str] = ()
    firewall: bool = True  # False: this NIC is not filtered at all


class Features(NamedTuple):
    conntrack: bool
    reject: bool


# ---- parsing --------------------------------------------------------------------------------
def check_rule(rule: FirewallRule) -> FirewallRule:
    """The rule normalised; ValueError(field, message) for anything nftables must not see."""
    direction, action, name = str(rule.direction).lower(), str(rule.action).upper(), str(rule.proto or "any").lower()
    if direction not in ("in", "out"):
        raise ValueError("direction", f"{rule.direction!r} is not IN or OUT")
    if action not in ACTIONS:
        raise ValueError("action", f"{rule.action!r} is not one of {', '.join(ACTIONS)}")
    proto = PROTOS.get(name)
    if name != "any" and proto is None:
        raise ValueError("-p", f"unknown protocol {rule.proto!r} (tcp, udp, icmp, icmpv6)")
    if (rule.dport or rule.sport) and proto not in ("tcp", "udp"):
        raise ValueError("-dport" if rule.dport else "-sport", "a port needs -p tcp or -p udp")
    dport = ",".join(_port_range(item.strip(), "-dport") for item in str(rule.dport).split(",")) if rule.dport else None
    sport = ",".join(_port_range(item.strip(), "-sport") for item in str(rule.sport).split(",")) if rule.sport else None
    source, dest = _addresses(rule.source, "-source", proto), _addresses(rule.dest, "-dest", proto)
    icmp_type = None
    if rule.icmp_type:
        if proto not in ("icmp", "icmpv6") or not re.fullmatch(r"[a-z][a-z-]{0,40}|\d{1,3}", str(rule.icmp_type)):
            raise ValueError("-icmp-type", f"{rule.icmp_type!r}: an ICMP type name or number, with -p icmp or icmpv6")
        icmp_type = str(rule.icmp_type)
    if rule.log not in (None, "nolog", *LOG_LEVELS):
        raise ValueError("-log", f"{rule.log!r} is not a log level ({', '.join(LOG_LEVELS)}, nolog)")
    if rule.iface is not None and not re.fullmatch(r"net\d{1,2}", str(rule.iface)):
        raise ValueError("-i", f"{rule.iface!r} is not a NIC name like net0")
    comment = re.sub(r'[^ -~]|["\\]', "", rule.comment)[:120] if rule.comment else None
    log = None if rule.log in (None, "nolog") else rule.log
    return FirewallRule(
        direction, action, proto, dport, source, comment or None, rule.iface, dest, sport, icmp_type, log
    )


def _addresses(value: str | None, key: str, proto: str | None) -> str | None:
    """A comma list of addresses, CIDRs and ``first-last`` ranges, normalised; None for none."""
    if not value:
        return None
    items = []
    for item in str(value).split(","):
        first, dash, last = item.strip().partition("-")
        try:
            if dash:
                low, high = ipaddress.ip_address(first), ipaddress.ip_address(last)
                if low.version != high.version or low > high:
                    raise ValueError(f"{item!r} is not an ascending range of one IP version")
                items.append((low.version, f"{low}-{high}"))
            else:
                net = ipaddress.ip_network(item.strip(), strict=False)
                items.append((net.version, str(net)))
        except ValueError as exc:
            raise ValueError(key, f"{value!r}: {exc} (aliases and IP sets are resolved before this)") from None
    if proto in ("icmp", "icmpv6") and any(v != (4 if proto == "icmp" else 6) for v, _ in items):
        raise ValueError(key, f"{value!r} does not match protocol {proto}")
    return ",".join(text for _, text in items)


def _port_range(item: str, key: str = "-dport") -> str:
    parts = item.split(":")
    if len(parts) > 2 or not all(p.isdigit() and 1 <= int(p) <= 65535 for p in parts):
        raise ValueError(key, f"{item!r} is not a port 1-65535 or a range like 1000:2000")
    if len(parts) == 2 and int(parts[0]) > int(parts[1]):
        raise ValueError(key, f"range {item!r} is reversed")
    return ":".join(str(int(p)) for p in parts)


# ---- rendering ------------------------------------------------------------------------------
def _set(items: Sequence[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def _verdict(action: str, direction: str, feats: Features, match: str = "", proto: str | None = None) -> list[str]:
    if action == "ACCEPT":
        return [f"{match}accept"]
    if action == "DROP" or direction == "in" or not feats.reject:
        return [f"{match}drop"]
    reset, other = f"{match}meta l4proto tcp reject with tcp reset", f"{match}reject"
    return [reset, other] if proto is None else [reset if proto == "tcp" else other]


def _by_version(value: str | None) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for item in value.split(",") if value else []:
        found.setdefault(6 if ":" in item else 4, []).append(item)
    return found


def log_prefix(tag: str, direction: str, verdict: str) -> str:
    return f"{LOG_PREFIX} {tag} {direction} {verdict}: "


def _rule_lines(rule: FirewallRule, feats: Features, tag: str = "") -> list[str]:
    match = f"meta l4proto {'ipv6-icmp' if rule.proto == 'icmpv6' else rule.proto} " if rule.proto else ""
    if rule.icmp_type:
        match += f"{'icmpv6' if rule.proto == 'icmpv6' else 'icmp'} type {rule.icmp_type} "
    match += f"th sport {_set(rule.sport.replace(':', '-').split(','))} " if rule.sport else ""
    match += f"th dport {_set(rule.dport.replace(':', '-').split(','))} " if rule.dport else ""
    tail = f' comment "{rule.comment}"' if rule.comment else ""
    sources, dests = _by_version(rule.source), _by_version(rule.dest)
    prefixes = []
    for version, key in ((4, "ip"), (6, "ip6")):
        if (rule.source and version not in sources) or (rule.dest and version not in dests):
            continue
        text = f"{key} saddr {_set(sources[version])} " if rule.source else ""
        text += f"{key} daddr {_set(dests[version])} " if rule.dest else ""
        prefixes.append(text)
    if not rule.source and not rule.dest:
        prefixes = [""]
    logged = f'log prefix "{log_prefix(tag, rule.direction, rule.action)}" level {rule.log} ' if rule.log else ""
    return [
        line + tail
        for prefix in prefixes
        for line in _verdict(rule.action, rule.direction, feats, prefix + match + logged, rule.proto)
    ]


def _replies(feats: Features) -> list[str]:
    if feats.conntrack:
        return ["ct state invalid drop", "ct state established,related accept"]
    return [
        "tcp flags & ack == ack accept",
        "icmp type { echo-reply, destination-unreachable, time-exceeded, parameter-problem } accept",
        "icmpv6 type { echo-reply, destination-unreachable, packet-too-big, time-exceeded } accept",
    ]


def _chains(
    port: Port, nic: str, policy: FirewallPolicy, rules: list[FirewallRule], feats: Features
) -> tuple[list[str], list[str]]:
    """(out chain, in chain) rules for one port: anti-spoofing, DHCP/ND, replies, the rules, the policy."""
    v4 = sorted({str(ipaddress.IPv4Interface(str(a)).ip) for a in port.ipv4})
    v6 = sorted({str(ipaddress.IPv6Interface(str(a)).ip) for a in port.ipv6})
    out = [f"ether saddr != {port.mac} drop", f"arp saddr ether != {port.mac} drop"] if policy.macfilter else []
    if policy.ipfilter:
        out.append(f"arp saddr ip != {_set(['0.0.0.0', *v4])} drop")
    out.append("ether type arp accept")
    if policy.dhcp:
        out += [
            "ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept",
            "ip6 saddr fe80::/10 udp sport 546 udp dport 547 accept",
        ]
    if policy.ipfilter:
        out.append(f"ip saddr != {_set(v4)} drop" if v4 else "ether type ip drop")
        if policy.ndp:  # duplicate address detection and MLD reports come from ::
            out.append(
                "ip6 saddr :: icmpv6 type { nd-neighbor-solicit, nd-router-solicit, mld-listener-report, "
                "mld2-listener-report } accept"
            )
        out += [f"ip6 saddr != {_set(['fe80::/10', *v6])} drop", "ether type != { ip, ip6, arp } drop"]
    out += [] if policy.radv else ["icmpv6 type nd-router-advert drop"]
    out += ["icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept"] if policy.ndp else []
    inn = ["ether type arp accept"]
    inn += ["udp sport 67 udp dport 68 accept", "udp sport 547 udp dport 546 accept"] if policy.dhcp else []
    if policy.ndp:
        inn.append("icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert, nd-redirect } accept")
    out, inn = out + _replies(feats), inn + _replies(feats)
    for rule in rules:
        if rule.iface in (None, nic):
            (inn if rule.direction == "in" else out).extend(_rule_lines(rule, feats, port.host_ifname))
    ends = []
    for direction, verdict, level in (
        ("out", policy.policy_out, policy.log_out),
        ("in", policy.policy_in, policy.log_in),
    ):
        logged = f'log prefix "{log_prefix(port.host_ifname, direction, verdict)}" level {level} ' if level else ""
        ends.append(_verdict(verdict, direction, feats, logged))
    return out + ends[0], inn + ends[1]


# ---- nft ------------------------------------------------------------------------------------
def _nft(args: list[str], text: str | None = None, check: bool = False) -> subprocess.CompletedProcess:
    binary = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if not binary:
        raise EngineError("firewall: nft not found (install nftables)")
    done = subprocess.run([binary, *args], input=text, capture_output=True, text=True, check=False)
    if check and done.returncode:
        raise EngineError(f"firewall: nft refused the change: {done.stderr.strip()}")
    return done


@functools.cache
def features() -> Features:
    """What this kernel's bridge family can do, checked without committing anything (nft -c)."""

    def works(statement: str) -> bool:
        probe = f"table bridge {TABLE}-probe {{ chain c {{ type filter hook prerouting priority 0; {statement}; }} }}"
        return _nft(["-c", "-f", "-"], probe + "\n").returncode == 0

    return Features(conntrack=works("ct state established accept"), reject=works("reject"))


@contextmanager
def _locked() -> Iterator[None]:
    """Read-modify-write of the shared table by several processes: one at a time."""
    os.makedirs(os.path.dirname(LOCK_PATH), exist_ok=True)
    with open(LOCK_PATH, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _state(ctid: int) -> tuple[list[tuple[str, str]], list[str], bool]:
    """The container's map entries (map, ifname) and chains, and whether other containers have any."""
    done = _nft(["-j", "list", "table", "bridge", TABLE])
    items = json.loads(done.stdout).get("nftables", []) if done.returncode == 0 else []
    elements = [(i["map"]["name"], e[0]) for i in items if "map" in i for e in i["map"].get("elem", [])]
    chains = [i["chain"]["name"] for i in items if "chain" in i]
    mine = [c for c in chains if re.fullmatch(rf"ct{ctid}i\d+-(in|out)", c)]
    others = any(re.fullmatch(r"ct\d+i\d+-(in|out)", c) for c in chains if c not in mine)
    return [(m, n) for m, n in elements if re.fullmatch(rf"veth{ctid}i\d+", str(n))], mine, others


def _check_ctid(ctid: int) -> int:
    if not isinstance(ctid, int) or isinstance(ctid, bool) or not 1 <= ctid <= 999_999_999:
        raise ValidationError(f"invalid container ID {ctid!r}", key="ctid")
    return ctid


def apply(ctid: int, ports: Sequence[Port], policy: FirewallPolicy) -> None:
    """Replace this container's chains and map entries in one transaction; other containers untouched."""
    ctid = _check_ctid(ctid)
    if not policy.enabled:
        return remove(ctid)
    for key in ("policy_in", "policy_out"):
        if getattr(policy, key) not in ACTIONS:
            raise ValidationError(f"firewall {key}: {getattr(policy, key)!r} is not one of {ACTIONS}", key=key)
    rules = []
    for index, rule in enumerate(policy.rules):
        try:
            rules.append(check_rule(rule))
        except ValueError as exc:
            raise ValidationError(f"firewall rule {index + 1}: {': '.join(map(str, exc.args))}", key="rules") from None
    wanted = {}
    for port in ports:
        match = re.fullmatch(rf"veth{ctid}i(\d+)", str(port.host_ifname))
        if not match or not MAC_RE.match(str(port.mac).lower()):
            raise ValidationError(
                f"firewall port {port.host_ifname!r}/{port.mac!r}: expected veth{ctid}i<N> and a MAC address",
                key="ports",
            )
        try:
            chains = _chains(port._replace(mac=port.mac.lower()), f"net{match.group(1)}", policy, rules, features())
        except ValueError as exc:
            raise ValidationError(f"firewall port {port.host_ifname}: bad address: {exc}", key="ports") from None
        if port.firewall:
            wanted[f"ct{ctid}i{match.group(1)}"] = (port.host_ifname, chains)
    lines = [
        f"add table bridge {TABLE}",
        *(f"add map bridge {TABLE} {m} {{ type ifname : verdict; }}" for m in ("out_ports", "in_ports")),
    ]
    for hook, vmap in (
        ("prerouting", "iifname vmap @out_ports"),
        ("forward", "oifname vmap @in_ports"),
        ("output", "oifname vmap @in_ports"),
    ):
        lines += [
            f"add chain bridge {TABLE} {hook} {{ type filter hook {hook} priority 0; policy accept; }}",
            f"flush chain bridge {TABLE} {hook}",
            f"add rule bridge {TABLE} {hook} {vmap}",
        ]
    with _locked():
        elements, chains, _ = _state(ctid)
        keep = {ifname for ifname, _ in wanted.values()}
        lines += [f'delete element bridge {TABLE} {m} {{ "{name}" }}' for m, name in elements if name not in keep]
        for base, (ifname, (out, inn)) in wanted.items():
            for chain, body, vmap in ((f"{base}-out", out, "out_ports"), (f"{base}-in", inn, "in_ports")):
                lines += [f"add chain bridge {TABLE} {chain}", f"flush chain bridge {TABLE} {chain}"]
                lines += [f"add rule bridge {TABLE} {chain} {rule}" for rule in body]
                lines.append(f'add element bridge {TABLE} {vmap} {{ "{ifname}" : jump {chain} }}')
        lines += [f"delete chain bridge {TABLE} {c}" for c in chains if c.rsplit("-", 1)[0] not in wanted]
        _nft(["-f", "-"], "\n".join(lines) + "\n", check=True)


def remove(ctid: int) -> None:
    """Delete the container's map entries and chains; the table goes too once no container has any."""
    ctid = _check_ctid(ctid)
    with _locked():
        elements, chains, others = _state(ctid)
        if not others and _nft(["list", "table", "bridge", TABLE]).returncode == 0:
            lines = [f"delete table bridge {TABLE}"]
        else:
            lines = [f'delete element bridge {TABLE} {m} {{ "{name}" }}' for m, name in elements]
            lines += [f"delete chain bridge {TABLE} {chain}" for chain in chains]
        if lines:
            _nft(["-f", "-"], "\n".join(lines) + "\n", check=True)


def ruleset_for(ctid: int) -> str:
    """The container's map entries and chains as nft prints them; empty if it has none."""
    elements, chains, _ = _state(_check_ctid(ctid))
    text = [f'{m}: "{name}"' for m, name in sorted(elements)]
    text += [_nft(["list", "chain", "bridge", TABLE, chain]).stdout.strip() for chain in sorted(chains)]
    return "\n".join(t for t in text if t)
