"""Arch Linux: systemd-networkd, enabled by a first-boot preset."""

from __future__ import annotations

from engine.distro.base import DistroSetup, register


@register("arch", "archlinux")
class Arch(DistroSetup):
    name = "archlinux"

    def template_fixup(self) -> None:
        self.setup_securetty()
        self.remove_lxc_name_from_etc_hosts()

    def setup_init(self) -> None:
        self.setup_systemd_preset({"systemd-networkd.service": True})

    def setup_network(self) -> None:
        self.setup_systemd_networkd()
