"""Debian, Devuan and Ubuntu: ifupdown's interfaces file (networkd from Ubuntu 17.10 on), sysvinit's inittab."""

from __future__ import annotations

import re

from engine.distro.base import DistroSetup, Unsupported, register
from engine.distro.interfaces import InterfacesWriter
from engine.distro.text import at_least

# testing releases and derivatives whose debian_version is a name
DEBIAN_NAMES = {
    "stretch/sid": "9.1",
    "buster/sid": "10",
    "bullseye/sid": "11",
    "bookworm/sid": "12",
    "trixie/sid": "13",
    "forky/sid": "14",
    "duke/sid": "15",
    "kali-rolling": "12",
}
DEVUAN_NAMES = {"jessie": 8, "ascii": 9, "beowulf": 10, "chimaera": 11, "daedalus": 12, "excalibur": 13}
POWERFAIL = "p0::powerfail:/sbin/init 0\n"


@register("debian", "kali", "raspbian")
class Debian(DistroSetup):
    name = "debian"
    ttydir_prefix = ""  # Debian has no /dev/lxc/ tty directory

    @classmethod
    def read_version(cls, root, os_release: dict) -> str:
        raw = root.first_line("etc/debian_version")
        if raw is None:
            raise Unsupported("etc/debian_version: cannot read the Debian version")
        value = DEBIAN_NAMES.get(raw, raw)
        match = re.match(r"^(\d+(\.\d+)?)(\.\d+)?", value)
        if not match:
            raise Unsupported(f"etc/debian_version: cannot parse the Debian version '{raw}'")
        version = int(float(match[1]))
        if version < 4:
            raise Unsupported(f"etc/debian_version: Debian {version} is too old")
        return str(version)

    def cidr_form(self) -> bool:
        return self.name == "debian" and at_least(self.version, 10, 0)

    def setup_init(self) -> None:
        init = self.root.readlink("sbin/init")
        if init is not None and init.endswith("/systemd") and at_least(self.version, 12, 0):
            self.setup_systemd_preset({"systemd-networkd.service": False})  # Debian's networking is ifupdown
        self.setup_inittab()

    def setup_inittab(self) -> None:
        """Proxmox's inittab: the power-off line the engine's SIGPWR needs, one getty per console tty."""
        old = self.root.read("etc/inittab")
        if old is None:
            return
        lines = [
            line
            for line in old.split("\n")
            if not re.match(r"^\s*\d+:\d*:[^:]*:.*getty", line) and not re.match(r"^\s*p[fno0]:", line)
        ]
        while lines and lines[-1] == "":
            lines.pop()
        text = "\n".join(lines) + "\n" + POWERFAIL
        getty = "-L 38400" if int(self.version or 0) < 7 else "--noclear 38400"
        for tty in range(1, self.settings.tty + 1):
            if tty != 7:  # X11's
                text += f"{tty}:{'2345' if tty == 1 else '23'}:respawn:/sbin/getty {getty} tty{tty}\n"
        self.root.write("etc/inittab", text)

    def setup_network(self) -> None:
        new = InterfacesWriter(list(self.nics_for_interfaces()), self.cidr_form()).render(
            self.root.read("etc/network/interfaces")
        )
        if new is not None:
            self.root.write("etc/network/interfaces", new)

    def nics_for_interfaces(self):
        return self.settings.nics


@register("devuan")
class Devuan(Debian):
    name = "devuan"  # Debian's files, but always the address + netmask form, as Proxmox writes them

    @classmethod
    def read_version(cls, root, os_release: dict) -> str:
        raw = (root.first_line("etc/devuan_version") or "").lower()
        version = DEVUAN_NAMES.get(raw.removesuffix("/ceres"))
        if version is None:
            raise Unsupported(f"etc/devuan_version: unsupported Devuan version '{raw}'")
        return str(version)


@register("ubuntu")
class Ubuntu(Debian):
    name = "ubuntu"

    @classmethod
    def read_version(cls, root, os_release: dict) -> str:
        lsb = root.read("etc/lsb-release") or ""
        match = re.search(r"^DISTRIB_RELEASE=(\d+\.\d+)$", lsb, re.MULTILINE | re.IGNORECASE)
        if not re.search(r"^DISTRIB_ID=Ubuntu$", lsb, re.MULTILINE | re.IGNORECASE) or not match:
            raise Unsupported("etc/lsb-release: no Ubuntu release in it")
        return match[1]

    def _at(self, version: str) -> bool:
        return float(self.version) >= float(version)  # compared as numbers, as Proxmox does ("17.10" == 17.1)

    def template_fixup(self) -> None:
        if self._at("17.10"):
            self.root.remove("etc/netplan/10-lxc.yaml")
        if self.version in ("15.04", "15.10", "16.04"):
            self.setup_securetty("pts/0")

    def setup_init(self) -> None:
        if self._at("23.04"):
            self.setup_systemd_preset({"systemd-networkd.service": True})

    def setup_network(self) -> None:
        if self._at("17.10"):
            self.setup_systemd_networkd()
        else:
            super().setup_network()
