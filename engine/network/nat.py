"""NAT for a bridge's subnet (``caisson-nat yes``): one nftables masquerade table per bridge.

Each change is one ``nft -f -`` transaction (a script on stdin, no shell).  The table holds a
single rule for the bridge's own subnet, so nothing else on the host is rewritten.  Forwarding
(``net.ipv4.ip_forward``) stays the host administrator's choice: the engine never changes it.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from engine.errors import HostError, ValidationError
from engine.network.ifupdown import Bridge

log = logging.getLogger(__name__)


def nat_table(name: str) -> str:
    return "caisson_" + "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def nat_ruleset(bridge: Bridge) -> str:
    """An nft script that (re)defines the bridge's masquerade table atomically: its subnet only."""
    if bridge.address is None:
        raise ValidationError(f"bridge '{bridge.name}': caisson-nat needs an IPv4 address on the bridge")
    table, net = nat_table(bridge.name), bridge.address.network
    return (
        f"table ip {table} {{}}\ndelete table ip {table}\n"
        f"table ip {table} {{\n  chain postrouting {{\n"
        f"    type nat hook postrouting priority srcnat; policy accept;\n"
        f'    ip saddr {net} ip daddr != {net} oifname != "{bridge.name}" masquerade\n  }}\n}}\n'
    )


def apply_nat(bridge: Bridge) -> None:
    """Install the masquerade rule.  Forwarding (ip_forward) stays the host administrator's choice."""
    _nft(nat_ruleset(bridge), bridge.name)
    try:
        if Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() != "1":
            log.warning(
                "bridge %s: NAT is on but net.ipv4.ip_forward is 0; containers will not reach out "
                "until the host enables forwarding",
                bridge.name,
            )
    except OSError:
        pass


def remove_nat(name: str) -> None:
    table = nat_table(name)
    _nft(f"table ip {table} {{}}\ndelete table ip {table}\n", name)


def nat_tables() -> list[str]:
    """Caisson's NAT tables on the host (``nft list tables ip`` prints ``table ip <name>`` lines)."""
    out = subprocess.run(["nft", "list", "tables", "ip"], capture_output=True, text=True, check=False).stdout
    names = (line.split()[-1] for line in out.splitlines() if line.strip())
    return [name for name in names if name.startswith("caisson_")]


def _nft(script: str, name: str) -> None:
    if not shutil.which("nft"):
        raise HostError(f"bridge '{name}': caisson-nat needs nftables (the 'nft' command)")
    done = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise HostError(f"bridge '{name}': nft failed: {done.stderr.strip()}")
