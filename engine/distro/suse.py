"""openSUSE and SLES: wicked's ifcfg/ifroute files, plus networkd files where networkd is installed."""

from __future__ import annotations

import re

from engine.distro.base import DistroSetup, Unsupported, gateway_on_link, register


@register("opensuse", "opensuse-leap", "opensuse-tumbleweed", "opensuse-slowroll", "sles")
class Suse(DistroSetup):
    name = "opensuse"

    @classmethod
    def read_version(cls, root, os_release: dict) -> str:
        version = os_release.get("VERSION_ID", "")
        if match := re.match(r"^(\d+)\.(\d+)$", version):
            major, minor = int(match[1]), int(match[2])
            if (
                major >= 42
                or (major == 13 and minor <= 2)
                or major in (15, 16)
                or (os_release.get("ID") == "sles" and major == 12)
            ):
                return version
        elif match := re.match(r"^(\d{4})(\d{2})(\d{2})$", version):  # Tumbleweed's date
            if int(match[1]) >= 2017 and int(match[2]) <= 12 and int(match[3]) <= 31:
                return version
        raise Unsupported(f"etc/os-release: SUSE release '{version}' is not supported")

    def template_fixup(self) -> None:
        self.setup_securetty()
        if not self.root.is_file("etc/locale.conf"):
            self.root.write("etc/locale.conf", "LANG=C.utf8")
        if not self.root.exists("etc/localtime"):
            self.root.symlink("/usr/share/zoneinfo/UTC", "etc/localtime")
        self.remove_lxc_name_from_etc_hosts()

    def setup_network(self) -> None:
        modes = ("static", "dhcp4", "dhcp6", "dhcp")
        for nic in self.settings.nics:
            routes, dhcp, addresses, configured = "", 0, [], False
            if nic.ip and nic.ip != "manual":
                configured = True
                if nic.ip == "dhcp":
                    dhcp |= 1
                else:
                    addresses.append(nic.ip)
                    if nic.gw is not None:
                        if gateway_on_link(nic, 4):
                            routes += f"{nic.gw} 0.0.0.0 255.255.255.255 {nic.name}\n"
                        routes += f"default {nic.gw} 0.0.0.0 {nic.name}\n"
            if nic.ip6 and nic.ip6 != "manual":
                configured = True
                if nic.ip6 == "dhcp":
                    dhcp |= 2
                elif nic.ip6 != "auto":
                    addresses.append(nic.ip6)
                    if nic.gw6 is not None:
                        if gateway_on_link(nic, 6):
                            routes += f"{nic.gw6}/128 - - {nic.name}\n"
                        routes += f"default {nic.gw6} - {nic.name}\n"
            if len(addresses) > 1:
                data = "".join(f"IPADDR_{i}={address}\n" for i, address in enumerate(addresses, 1))
            elif addresses:
                data = f"IPADDR={addresses[0]}\n"
            elif configured and not dhcp:
                continue  # SLAAC only: nothing wicked needs
            else:
                data = ""
            data = f"STARTMODE={'onboot' if configured else 'manual'}\nBOOTPROTO={modes[dhcp]}\n" + data
            self.root.write(f"etc/sysconfig/network/ifcfg-{nic.name}", data)
            self.modify(f"etc/sysconfig/network/ifroute-{nic.name}", routes, delete=True, prepend=True)
        if self.root.is_file("usr/lib/systemd/systemd-networkd"):
            self.setup_systemd_networkd()
