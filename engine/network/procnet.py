"""A container's addresses and traffic counters read from /proc/<pid>/net: cheap enough for every list.

``/proc/<pid>/net`` shows the network namespace of that process, so no
netlink socket (and no pyroute2 import) is needed for the dashboard's table
and graphs; ``veth.interfaces`` gives the full netlink view when asked.
"""

from __future__ import annotations

import ipaddress


def counters(pid: int) -> dict[str, dict[str, int]]:
    """Per interface: rx/tx bytes and packets, as the container sees them (lo left out)."""
    result: dict[str, dict[str, int]] = {}
    try:
        with open(f"/proc/{pid}/net/dev") as handle:
            lines = handle.read().splitlines()[2:]
    except OSError:
        return result
    for line in lines:
        name, _, data = line.partition(":")
        fields = data.split()
        name = name.strip()
        if name != "lo" and len(fields) >= 10:
            result[name] = {
                "rx_bytes": int(fields[0]),
                "rx_packets": int(fields[1]),
                "tx_bytes": int(fields[8]),
                "tx_packets": int(fields[9]),
            }
    return result


def addresses(pid: int) -> dict[str, list[str]]:
    """The container's global IPv4 and IPv6 addresses."""
    ipv4: list[str] = []
    ipv6: list[str] = []
    try:
        with open(f"/proc/{pid}/net/fib_trie") as handle:
            trie = handle.read().splitlines()
    except OSError:
        trie = []
    # A local address appears as "|-- A.B.C.D" followed by "/32 host LOCAL".
    for previous, line in zip(trie, trie[1:], strict=False):
        if "/32 host LOCAL" in line and "|--" in previous:
            address = previous.split("|--")[1].strip()
            if not address.startswith("127.") and address not in ipv4:
                ipv4.append(address)
    try:
        with open(f"/proc/{pid}/net/if_inet6") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) >= 6 and fields[5] != "lo":
                    address = ipaddress.IPv6Address(int(fields[0], 16))
                    if not address.is_link_local:
                        ipv6.append(str(address))
    except OSError:
        pass
    return {"ipv4": sorted(ipv4, key=ipaddress.IPv4Address), "ipv6": sorted(ipv6)}
