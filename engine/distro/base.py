"""What every family does inside a container, and the registry that picks a family from its files.

A family (one subclass per distribution family, registered by its os-release
IDs) writes what that family's own tools read, with the results Proxmox's
per-distribution setup gives, so a container moved from Proxmox keeps its
files and a template configured here looks the way Proxmox users know:

- at each start (``pre_start``): init tweaks, network files, hostname and
  ``/etc/hosts``, ``/etc/resolv.conf``;
- at create (``post_create``): template fix-ups, root's password and SSH keys,
  root's crontab minutes spread, then the start's steps.

Everything goes through :class:`engine.distro.files.Root`, so nothing is
written outside the container's root and nothing at all when a step refuses.
"""

from __future__ import annotations

import random as _random
import re
import time
import uuid as _uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.distro.files import Root
from engine.distro.text import BEGIN, REMOVE, modify_block, remove_blocks, split_list
from engine.errors import ValidationError
from engine.network.nics import Nic, gateway_on_link


class Unsupported(ValidationError):
    """A file in the container that Caisson cannot honour; nothing was written."""


@dataclass(frozen=True)
class Settings:
    """What the setup needs from a container's config (and the host's resolver as the DNS fallback)."""

    hostname: str = "localhost"
    nics: tuple[Nic, ...] = ()
    nameserver: str | None = None  # the config's keys, None when unset
    searchdomain: str | None = None
    tty: int = 2
    unprivileged: bool = True
    host_nameservers: tuple[str, ...] = ()
    host_search: str | None = None
    ostype: str | None = None
    new_uuid: Callable[[], str] = field(default=lambda: str(_uuid.uuid4()), compare=False)

    def dns(self) -> tuple[str, str]:
        """(search domains, nameservers) as Proxmox looks them up: the config's, else the host's."""
        servers = self.nameserver if self.nameserver is not None else " ".join(self.host_nameservers[:3])
        search = self.searchdomain if self.searchdomain is not None else (self.host_search or "")
        return search, servers

    def primary_ip(self) -> str | None:
        """net0's static IPv4 (else IPv6) address without its prefix: the name's address in /etc/hosts."""
        nic = next((n for n in self.nics if n.index == 0), None)
        if nic is None:
            return None
        for cidr in (nic.ipv4, nic.ipv6):
            if cidr is not None:
                return str(cidr.ip)
        return None


class DistroSetup:
    """The base family; subclasses override the steps their distribution does differently."""

    name = "generic"
    configures_addresses = True  # the container's own networking sets static addresses
    ttydir_prefix = "lxc/"  # where privileged containers' ttys live (Proxmox's devttydir)

    def __init__(self, root: Root, settings: Settings, version: str | None = None):
        self.root = root
        self.settings = settings
        self.version = version

    @classmethod
    def read_version(cls, root: Root, os_release: dict[str, str]) -> str | None:
        """The release, from the family's release file; raises Unsupported for one Caisson cannot honour."""
        return None

    # ---- the two entry points --------------------------------------------------------------
    def pre_start(self) -> None:
        self.setup_init()
        self.setup_network()
        self.set_hostname()
        self.set_dns()

    def post_create(
        self, password_hash: str | None, ssh_keys: str | None, rand: Callable[[], float] = _random.random
    ) -> None:
        self.create_fixups(rand)
        self.set_root_password(password_hash)
        if ssh_keys:
            self.set_authorized_keys(ssh_keys)
        self.pre_start()

    def create_fixups(self, rand: Callable[[], float] = _random.random) -> None:
        """What the engine's create does with a new template's files: the family's fix-ups, root's cron
        minutes spread (root's credentials are their own step, the start's files written at each start)."""
        self.template_fixup()
        self.randomize_crontab(rand)

    # ---- steps, with what most families do -------------------------------------------------
    def setup_init(self) -> None:
        pass

    def setup_network(self) -> None:
        pass

    def template_fixup(self) -> None:
        pass

    def devttydir(self) -> str:
        return "" if self.settings.unprivileged else self.ttydir_prefix

    def set_hostname(self) -> None:
        self.update_etc_hosts(self.settings.hostname)
        self.root.write("etc/hostname", self.settings.hostname.split(".")[0] + "\n")

    def update_etc_hosts(self, hostname: str) -> None:
        path = "etc/hosts"
        if self.root.ignored(path):
            return
        namepart = hostname.split(".")[0]
        if "." in hostname:
            names = f"{hostname} {namepart}"
        else:
            names = " ".join([f"{hostname}.{domain}" for domain in split_list(self.settings.dns()[0])] + [hostname])
        old = self.root.read(path)
        section = ""
        lo4, lo6 = "127.0.0.1 localhost.localnet localhost\n", "::1 localhost.localnet localhost\n"
        if old is not None:
            rest = remove_blocks(old)
            section += "" if re.search(r"^[ \t]*127\.0\.0\.1[ \t]+", rest, re.MULTILINE) else lo4
            section += "" if re.search(r"^[ \t]*::1[ \t]+", rest, re.MULTILINE) else lo6
        else:
            section = lo4 + lo6
        address = self.settings.primary_ip()
        if address is not None:
            section += f"{address} {names}\n"
        elif namepart != "localhost":
            section += f"127.0.1.1 {names}\n"
        else:
            section += f"127.0.1.1 {namepart}\n"
        self.modify(path, section)

    def set_dns(self) -> None:
        search, servers = self.settings.dns()
        data = f"search {' '.join(split_list(search))}\n" if search else ""
        data += "".join(f"nameserver {server}\n" for server in split_list(servers))
        if self.root.is_symlink("etc/resolv.conf"):
            return  # systemd-resolved's stub: the container's resolver is its own
        self.modify("etc/resolv.conf", data, replace=True)

    # ---- helpers the families share --------------------------------------------------------
    def modify(self, path: str, data: str, mode: int | None = None, **options) -> None:
        """Set the marked block of a file (Proxmox's ``ct_modify_file``)."""
        if self.root.ignored(path):
            return
        new = modify_block(self.root.read(path), data, **options)
        if new is REMOVE:
            self.root.remove(path)
        elif new is not None:
            self.root.write(path, new, mode if self.root.read(path) is None else None)

    def setup_securetty(self, *devices: str) -> None:
        """Let root log in on the console and the first ttys (only where a securetty exists)."""
        old = self.root.read("etc/securetty")
        if old is None:
            return
        if not devices:
            devices = tuple(self.devttydir() + dev for dev in ("console", "tty1", "tty2", "tty3", "tty4"))
        data = (old[:-1] if old.endswith("\n") else old) + "\n"
        for dev in devices:
            if not re.search(rf"^{re.escape(dev)}\s*$", data, re.MULTILINE):
                data += f"{dev}\n"
        self.root.write("etc/securetty", data)

    def setup_systemd_preset(self, extra: dict[str, bool] | None = None) -> None:
        """First-boot presets (only read while /etc/machine-id is missing): units useless in a container off."""
        preset = {
            "sys-kernel-config.mount": False,
            "sys-kernel-debug.mount": False,
            "getty@.service": False,
            "container-getty@.service": True,
            **(extra or {}),
        }
        data = "# Added by PVE at create-time for first-boot configuration.\n"
        data += "".join(f"{'enable' if on else 'disable'} {unit}\n" for unit, on in sorted(preset.items()))
        self.root.write("etc/systemd/system-preset/00-pve.preset", data)

    def setup_systemd_networkd(self) -> None:
        """One ``<name>.network`` per interface, with on-link routes to gateways outside the subnet."""
        dhcp_modes = ("no", "ipv4", "ipv6", "yes")
        for nic in self.settings.nics:
            data = (
                f"[Match]\nName = {nic.name}\n\n[Network]\nDescription = Interface {nic.name} autoconfigured by PVE\n"
            )
            routes, dhcp, accept_ra = "", 0, "false"
            if nic.ip == "dhcp":
                dhcp |= 1
            elif nic.ipv4 is not None:
                data += f"Address = {nic.ip}\n"
            if nic.gw is not None:
                data += f"Gateway = {nic.gw}\n"
                if gateway_on_link(nic, 4):
                    routes += f"\n[Route]\nDestination = {nic.gw}/32\nScope = link\n"
            if nic.ip6 == "dhcp":
                dhcp |= 2
                accept_ra = "true"
            elif nic.ip6 == "auto":
                accept_ra = "true"
            elif nic.ipv6 is not None:
                data += f"Address = {nic.ip6}\n"
            if nic.gw6 is not None:
                accept_ra = "false"
                data += f"Gateway = {nic.gw6}\n"
                if gateway_on_link(nic, 6):
                    routes += f"\n[Route]\nDestination = {nic.gw6}/128\nScope = link\n"
            data += f"DHCP = {dhcp_modes[dhcp]}\nIPv6AcceptRA = {accept_ra}\n" + routes
            self.root.write(f"etc/systemd/network/{nic.name}.network", data)

    def remove_lxc_name_from_etc_hosts(self) -> None:
        """Templates from images.linuxcontainers.org carry a bogus ``127.0.1.1 LXC_NAME`` line."""
        old = self.root.read("etc/hosts")
        if old is None:
            return
        lines = [line for line in old.split("\n") if not re.match(r"^127.0.1.1\s+LXC_NAME$", line)]
        while lines and lines[-1] == "":
            lines.pop()
        self.root.write("etc/hosts", "\n".join(lines) + "\n")

    def set_root_password(self, password_hash: str | None) -> None:
        """Root's crypt(3) hash in /etc/shadow (passwd gets ``x``), or in /etc/passwd without a shadow file;
        no password locks the account (``*``), as Proxmox does."""
        if not self.root.is_file("etc/passwd"):
            return
        hashed = password_hash or "*"
        days = int(time.time() // 86400)
        shadow = self.root.read("etc/shadow")
        if shadow is not None:
            self.root.write(
                "etc/shadow",
                re.sub(r"^root:[^:\n]*:[^:\n]*:", f"root:{_sub(hashed)}:{days}:", shadow, flags=re.MULTILINE),
            )
            hashed = "x"
        self.root.write(
            "etc/passwd",
            re.sub(r"^root:[^:\n]*:", f"root:{_sub(hashed)}:", self.root.read("etc/passwd"), flags=re.MULTILINE),
        )

    def set_authorized_keys(self, keys: str) -> None:
        """Root's keys in the marked block of ``~root/.ssh/authorized_keys`` (home from /etc/passwd)."""
        home = "root"
        for line in (self.root.read("etc/passwd") or "").splitlines():
            fields = line.split(":")
            if fields[0] == "root" and len(fields) > 5:
                home = fields[5].strip("/") or home
                break
        if not self.root.is_dir(home) and not self.root.is_symlink(home):
            raise Unsupported(f"ssh-public-keys: root's home directory '/{home}' does not exist in the container")
        self.root.make_dir(f"{home}/.ssh", 0o700)
        self.modify(f"{home}/.ssh/authorized_keys", keys, mode=0o600)

    def randomize_crontab(self, rand: Callable[[], float]) -> None:
        """Spread root's cron jobs over the hour, so containers made from one template do not run them at once."""
        files = [
            f"etc/cron.d/{name}" for name in self.root.listdir("etc/cron.d") if re.fullmatch(r"[A-Z\-_a-z0-9]+", name)
        ]
        if self.root.is_file("etc/crontab"):
            files.insert(0, "etc/crontab")
        for path in files:
            text = self.root.read(path)
            if text is None:
                continue
            out = []
            for line in text.split("\n"):
                match = re.match(r"^\d+(\s+\S+\s+\S+\s+\S+\s+\S+\s+root\s+\S.*)$", line)
                out.append(f"{int(rand() * 59)}{match[1]}" if match else line)
            while out and out[-1] == "":
                out.pop()
            self.root.write(path, "".join(line + "\n" for line in out))


def _sub(text: str) -> str:
    return text.replace("\\", "\\\\")


# ---- the registry ----------------------------------------------------------------------------
REGISTRY: dict[str, type[DistroSetup]] = {}


def register(*ids: str):
    """Register a family under os-release IDs (and Proxmox's ``ostype`` names)."""

    def decorate(cls: type[DistroSetup]) -> type[DistroSetup]:
        for name in ids:
            REGISTRY[name] = cls
        return cls

    return decorate


__all__ = ["BEGIN", "DistroSetup", "REGISTRY", "Settings", "Unsupported", "gateway_on_link", "register"]
