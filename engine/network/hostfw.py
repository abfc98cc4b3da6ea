"""The node level (``host.fw``) enforced on what the node's containers send to the host itself.

Proxmox's host firewall filters all of a node's traffic.  A Caisson node shares its host with whatever
else runs there, so the node level here filters only packets that arrive on the node's own bridges (the
ones its interfaces file defines) for the host: the host's uplinks, its SSH and everything else are never
touched, and a wrong rule cannot lock an administrator out.  One ``inet`` table per node state root
(``caisson_host_<hash>``), replaced in one ``nft -f -`` transaction; the input chain accepts replies,
the node's DHCP and DNS for its containers, then ``host.fw``'s IN rules (groups, aliases, IP sets and
macros resolved as for containers), then the datacenter's ``policy_in`` (DROP unless it says otherwise).
Enforced when ``cluster.fw`` is enabled and ``host.fw`` exists with ``enable: 1``; otherwise the table
is removed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from engine.network.firewall import FirewallPolicy, _nft, _rule_lines, _verdict, features

BASE_RULES = [
    "ct state invalid drop",
    "ct state established,related accept",
    "udp sport 68 udp dport 67 accept",  # the node's DHCP server
    "meta l4proto { tcp, udp } th dport 53 accept",  # and its DNS
]


def table_name(root: Path | str) -> str:
    return "caisson_host_" + hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:8]


def ruleset(table: str, policy: FirewallPolicy, bridges: list[str]) -> str:
    """The nft script: the table (re)made with the policy, or only removed when there is nothing to do."""
    script = f"table inet {table} {{}}\ndelete table inet {table}\n"
    if not policy.enabled or not bridges:
        return script
    feats = features()
    names = ", ".join(json.dumps(b) for b in sorted(bridges))
    rules = [f"iifname != {{ {names} }} accept", *BASE_RULES]
    for rule in policy.rules:
        if rule.direction == "in":
            rules += _rule_lines(rule, feats, "host")
    rules += _verdict(policy.policy_in, "in", feats)
    body = "\n".join(f"    {r}" for r in rules)
    return script + (
        f"table inet {table} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n"
        f"{body}\n  }}\n}}\n"
    )


def apply(root: Path | str) -> list[str]:
    """Bring the host's table to the node's files; returns what was skipped (warnings)."""
    from engine.network.bridges import NodeNetwork
    from engine.network.fwcompile import compile_host, load

    compiled = compile_host(load(root, "host"), load(root, "cluster"))
    if not compiled.policy.enabled and not shutil.which("nft"):
        return compiled.warnings  # nothing enforced, and no nftables to have anything left in
    bridges = list(NodeNetwork(root).bridges())
    _nft(["-f", "-"], ruleset(table_name(root), compiled.policy, bridges), check=True)
    return compiled.warnings
