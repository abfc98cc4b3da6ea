"""Alpine: ifupdown-style interfaces (busybox's), OpenRC's runlevel links, inittab gettys."""

from __future__ import annotations

import dataclasses
import re

from engine.distro.base import DistroSetup, register
from engine.distro.interfaces import InterfacesWriter
from engine.distro.text import at_least


@register("alpine")
class Alpine(DistroSetup):
    name = "alpine"
    ttydir_prefix = ""

    @classmethod
    def read_version(cls, root, os_release: dict) -> str | None:
        return root.first_line("etc/alpine-release")

    def template_fixup(self) -> None:
        for runlevel, service in (
            ("boot", "networking"),
            ("boot", "bootmisc"),
            ("boot", "hostname"),
            ("shutdown", "killprocs"),
            ("shutdown", "savecache"),
        ):
            self.root.symlink(f"/etc/init.d/{service}", f"etc/runlevels/{runlevel}/{service}")
        self.setup_securetty()
        self.remove_lxc_name_from_etc_hosts()

    def setup_init(self) -> None:
        old = self.root.read("etc/inittab")
        if old is None:
            return
        lines = [line for line in old.split("\n") if not re.match(r"^\s*tty\d+:\d*:[^:]*:.*getty", line)]
        while lines and lines[-1] == "":
            lines.pop()
        text = "\n".join(lines) + "\n"
        text += "".join(
            f"tty{tty}::respawn:/sbin/getty 38400 tty{tty}\n" for tty in range(1, self.settings.tty + 1) if tty != 7
        )
        self.root.write("etc/inittab", text)

    def setup_network(self) -> None:
        # busybox's udhcpc6 cannot do DHCPv6 and ifupdown has no SLAAC mode: those become "manual"
        nics = [
            dataclasses.replace(nic, ip6="manual") if nic.ip6 in ("dhcp", "auto") else nic for nic in self.settings.nics
        ]
        new = InterfacesWriter(nics, at_least(self.version, 3, 13)).render(self.root.read("etc/network/interfaces"))
        if new is not None:
            self.root.write("etc/network/interfaces", new)
