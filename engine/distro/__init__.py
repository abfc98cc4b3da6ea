"""Per-distribution setup inside a container: one family per distribution, chosen from its files.

``detect(root, settings)`` picks the family as Proxmox does (os-release's ID,
then the release files), with Caisson's additions (busybox, ID_LIKE, a
generic family instead of a refusal); the family's ``pre_start`` runs at
every start and its ``create_fixups`` once at create (:func:`post_create`,
a step of :mod:`engine.create_steps`).  Changes are staged on the
:class:`Root` and applied by ``Root.commit()``, so a refusal writes nothing.
"""

from __future__ import annotations

import errno
import ipaddress

from engine.config import ContainerConfig
from engine.distro import alpine, arch, debian, redhat, suse  # noqa: F401  (they register themselves)
from engine.distro.base import REGISTRY, DistroSetup, Settings, Unsupported
from engine.distro.busybox import Generic
from engine.distro.files import Root
from engine.distro.text import parse_os_release, split_list
from engine.errors import ValidationError
from engine.network.nics import from_config

# Proxmox's fallback when os-release names nothing known: the release files, in this order
RELEASE_FILES = (
    ("etc/debian_version", "debian"),
    ("etc/devuan_version", "devuan"),
    ("etc/SuSE-brand", "opensuse"),
    ("etc/SuSE-release", "opensuse"),
    ("etc/fedora-release", "fedora"),
    ("etc/centos-release", "centos"),
    ("etc/redhat-release", "centos"),
    ("etc/arch-release", "archlinux"),
    ("etc/alpine-release", "alpine"),
)


def host_resolver(text: str | None) -> tuple[tuple[str, ...], str | None]:
    """The host's nameservers (loopback ones mean nothing inside a container) and search domains."""
    servers, search = [], None
    for line in (text or "").splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                if not ipaddress.ip_address(words[1].split("%")[0]).is_loopback:
                    servers.append(words[1])
            except ValueError:
                continue
        elif words and words[0] in ("search", "domain"):
            search = " ".join(words[1:])
    return tuple(servers), search


def settings(config: ContainerConfig, host_resolv: str | None = None, **overrides) -> Settings:
    """The setup's view of a container's config; ``host_resolv`` is the host's resolv.conf (DNS fallback)."""
    values = config.current.values
    servers, search = host_resolver(host_resolv)
    for key in ("nameserver",):
        for server in split_list(values.get(key)):
            try:
                ipaddress.ip_address(server)
            except ValueError:
                raise ValidationError(f"nameserver: '{server}' is not an IP address", key="nameserver") from None
    fields = dict(
        hostname=values.get("hostname") or "localhost",
        nics=tuple(from_config(config)),
        nameserver=values.get("nameserver"),
        searchdomain=values.get("searchdomain"),
        tty=int(config.get("tty")),
        unprivileged=config.unprivileged,
        host_nameservers=servers,
        host_search=search,
        ostype=values.get("ostype"),
    )
    fields.update(overrides)
    return Settings(**fields)


def os_release(root: Root) -> dict[str, str]:
    for path in ("etc/os-release", "usr/lib/os-release"):
        text = root.read(path)
        if text is not None:
            return parse_os_release(text)
    return {}


def family_of(root: Root, values: dict[str, str], ostype: str | None = None) -> type[DistroSetup]:
    ident = values.get("ID", "")
    if ostype == "unmanaged" and ident != "busybox":  # Caisson marks its busybox unmanaged, as Proxmox would
        return REGISTRY["unmanaged"]
    if ident in REGISTRY:
        return REGISTRY[ident]
    lsb = root.read("etc/lsb-release") or ""
    if any(line.strip().lower() == "distrib_id=ubuntu" for line in lsb.splitlines()):
        return REGISTRY["ubuntu"]
    for path, name in RELEASE_FILES:
        if root.is_file(path):
            return REGISTRY[name]
    for like in values.get("ID_LIKE", "").lower().split():
        if like in REGISTRY:
            return REGISTRY[like]
    return Generic


def detect(root: Root, settings: Settings) -> DistroSetup:
    """The family of the container at ``root`` with its release read; Unsupported names a file it cannot honour."""
    values = os_release(root)
    cls = family_of(root, values, settings.ostype)
    return cls(root, settings, cls.read_version(root, values))


__all__ = [
    "DistroSetup",
    "Root",
    "Settings",
    "Unsupported",
    "configures_addresses",
    "detect",
    "family_of",
    "host_resolver",
    "os_release",
    "post_create",
    "settings",
    "host_step",
    "start_step",
]


def post_create(tree, config: ContainerConfig, owner: tuple[int, int]) -> None:
    """The create step, on the new container's stopped tree (written by the host, what is created owned by
    ``owner``, the container's root): the family's template fix-ups and root's cron minutes spread."""
    with Root(tree, owner=owner) as root:
        detect(root, settings(config)).create_fixups()
        root.commit()


def _host_settings(config: ContainerConfig, host_resolv: str) -> Settings:
    try:
        with open(host_resolv) as handle:
            resolv = handle.read()
    except OSError:
        resolv = None
    return settings(config, resolv)


def _apply(root: Root, wanted: Settings, step) -> None:
    """The family's start files on ``root``; ``step.configures_addresses`` tells the network's step next."""
    family = detect(root, wanted)
    step.configures_addresses = family.configures_addresses
    family.pre_start()
    try:
        root.commit()
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES):  # a read-only rootfs keeps its own files
            raise


def start_step(config: ContainerConfig, host_resolv: str = "/etc/resolv.conf"):
    """The start step run inside the container (cwd its root, as its root user) before its init: the
    family's files for this config.  The config is read and checked here, on the host, before the start."""
    wanted = _host_settings(config, host_resolv)

    def distro_setup() -> None:
        with Root("/") as root:
            _apply(root, wanted, distro_setup)

    return distro_setup


def host_step(config: ContainerConfig, rootfs, owner: tuple[int, int], host_resolv: str = "/etc/resolv.conf"):
    """The same files written from the host, as a prepare step of the start (``callable(pid)``): for a
    rootfs that is a plain directory, the same tree init sees, whose files the start then writes in the
    engine's process before init is forked (Python in a freshly forked child costs a page copy per page
    it touches: about 2 ms against 0.4 here).  Paths resolve inside ``rootfs`` as in a chroot, as at
    create (``post_create``); what is created is owned by ``owner``, the container's root."""
    wanted = _host_settings(config, host_resolv)

    def distro_setup(pid: int) -> None:  # named as the inside step: a failure names the same step
        with Root(rootfs, owner=owner) as root:
            _apply(root, wanted, distro_setup)

    return distro_setup


def configures_addresses(ostype: str | None = None) -> bool:
    """Inside the container: does its own networking set static addresses (else the engine does)?"""
    with Root("/") as root:
        return family_of(root, os_release(root), ostype).configures_addresses
