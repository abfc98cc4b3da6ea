"""``/etc/network/interfaces`` rewritten in place, stanza by stanza, as Proxmox does it.

The file is read line by line: comments, blank lines and other interfaces'
stanzas are copied; an ``iface <name> inet|inet6`` stanza of a managed
interface is rewritten with the config's address (keeping its other option
lines), or dropped when the config no longer has that family.  Interfaces not
yet in the file are appended, in name order.  A gateway outside the address's
subnet becomes four ``post-up``/``pre-down`` route lines between Proxmox's
marker comments, written *inside* the stanza; those marked lines (and, in
files from before the markers, the same four lines unmarked) are what gets
replaced on the next run, so nothing the user added is lost.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from engine.distro.base import gateway_on_link
from engine.distro.text import BEGIN, END
from engine.network.nics import Nic

_OTHER_STANZA = re.compile(r"^\s*(?:mapping\s|allow-|source\s|source-directory\s)")
_DROPPED_OPTIONS = ("address", "netmask", "gateway", "broadcast")


@dataclass
class _Section:
    ifname: str
    family: str  # "inet" or "inet6"
    options: list[str] = field(default_factory=list)


def _routes(ifname: str, gw: str) -> str:
    return (
        f"{BEGIN}\n\tpost-up ip route add {gw} dev {ifname}\n"
        f"\tpost-up ip route add default via {gw} dev {ifname}\n"
        f"\tpre-down ip route del default via {gw} dev {ifname}\n"
        f"\tpre-down ip route del {gw} dev {ifname}\n{END}\n"
    )


def _drop_old_routes(options: list[str]) -> list[str]:
    """The stanza's option lines without the previous run's gateway routes."""
    kept, keep, marked = [], True, False
    for line in options:
        if line == BEGIN:
            marked, keep = True, False
        elif line == END:
            marked, keep = True, True
        elif keep:
            kept.append(line)
    if marked:
        return kept
    patterns = (
        r"post-up\s+ip\s+route\s+add\s+(\S+)\s+dev\s+(\S+)$",
        r"post-up\s+ip\s+route\s+add\s+default\s+via\s+(\S+)\s+dev\s+(\S+)$",
        r"pre-down\s+ip\s+route\s+del\s+default\s+via\s+(\S+)\s+dev\s+(\S+)$",
        r"pre-down\s+ip\s+route\s+del\s+(\S+)\s+dev\s+(\S+)$",
    )
    index = 0
    while index < len(kept) - 3:  # before the markers: the exact four lines, same gateway and device
        matches = [re.match(r"^\s*" + pattern, kept[index + n]) for n, pattern in enumerate(patterns)]
        if all(matches) and len({(m[1], m[2]) for m in matches}) == 1:
            del kept[index : index + 4]
        else:
            index += 1
    return kept


class InterfacesWriter:
    """One rewrite of the file for a set of interfaces; ``cidr_form``: ``address a.b.c.d/NN`` (Debian >= 10,
    Alpine >= 3.13) rather than ``address`` and ``netmask``."""

    def __init__(self, nics: list[Nic], cidr_form: bool):
        self.nics = {nic.name: nic for nic in nics if nic.ip is not None or nic.ip6 is not None}
        self.cidr_form = cidr_form
        self.out: list[str] = []
        self.done_auto: set[str] = set()
        self.done: set[tuple[str, str]] = set()

    def render(self, old: str | None) -> str | None:
        if not self.nics:
            return None
        section: _Section | None = None
        for line in (old or "").splitlines():
            if re.match(r"^# --- (?:BEGIN|END) PVE ---", line):
                if section:
                    section.options.append(line)
                continue
            if line.startswith("#"):
                self.out.append(line + "\n")
                continue
            if not line.strip():
                if section:
                    section = self._emit(section)
                else:
                    self.out.append(line + "\n")
                continue
            stanza = re.match(r"^\s*iface\s+(\S+)\s+(inet6?)\s+(\S+)\s*$", line)
            if stanza:
                section = self._emit(section)
                if stanza[1] in self.nics:
                    section = _Section(stanza[1], stanza[2])
                else:
                    self.out.append(line + "\n")
                continue
            auto = re.match(r"^\s*auto\s*(.*)$", line)
            if auto or _OTHER_STANZA.match(line):
                if auto:
                    self.done_auto.update(auto[1].split())
                section = self._emit(section)
                self.out.append(line + "\n")
                continue
            option = re.match(r"^\s*((\S+)\s(.*))$", line)
            if section and option:
                if option[2] not in _DROPPED_OPTIONS:
                    section.options.append(option[1])
                continue
            self.out.append(line + "\n")
        self._emit(section)
        text = "".join(self.out)
        self.out = []
        separator = bool(text) and not text.endswith("\n\n")
        for name in sorted(self.nics):
            for family in ("inet", "inet6"):
                if (name, family) not in self.done and self._value(self.nics[name], family) is not None:
                    if separator:
                        self.out.append("\n")
                        separator = False
                    self._emit(_Section(name, family))
        text += "".join(self.out)
        if "lo" not in self.done_auto:
            text = "auto lo\niface lo inet loopback\niface lo inet6 loopback\n\n" + text
        return text

    @staticmethod
    def _value(nic: Nic, family: str) -> str | None:
        return nic.ip if family == "inet" else nic.ip6

    def _emit(self, section: _Section | None) -> None:
        """Write a managed stanza (the ``auto`` line first, once); returns None, the section is done."""
        if section is None:
            return None
        name, nic = section.ifname, self.nics[section.ifname]
        if name not in self.done_auto:
            self.out.append(f"auto {name}\n")
            self.done_auto.add(name)
        self.done.add((name, section.family))
        value = self._value(nic, section.family)
        if value is None:
            return None
        keywords = ("dhcp", "manual") if section.family == "inet" else ("auto", "dhcp", "manual")
        if value in keywords:
            self.out.append(f"iface {name} {section.family} {value}\n\n")
            return None
        address, _, prefix = value.partition("/")
        lines = [f"iface {name} {section.family} static\n"]
        if self.cidr_form:
            lines.append(f"\taddress {value}\n")
        elif section.family == "inet":
            lines.append(f"\taddress {address}\n\tnetmask {ipaddress.ip_interface(value).netmask}\n")
        else:
            lines.append(f"\taddress {address}\n\tnetmask {prefix}\n")
        version = 4 if section.family == "inet" else 6
        gw = nic.gw if version == 4 else nic.gw6
        if gw is not None:
            lines.append(_routes(name, gw) if gateway_on_link(nic, version) else f"\tgateway {gw}\n")
        lines += [f"\t{option}\n" for option in _drop_old_routes(section.options)]
        self.out.append("".join(lines) + "\n")
        return None
