"""The command that upgrades a container's packages, by its ``ostype`` (Proxmox's names).

Run inside the running container as root, without a terminal: each answers
its package manager's questions itself (``-y``, Debian's noninteractive
front end keeping changed config files), so an upgrade never waits for a
keyboard.  A container whose ostype has no known package manager (``unmanaged``,
Caisson's busybox; NixOS, whose upgrades are rebuilds) is refused by name.
"""

from __future__ import annotations

from engine.errors import ValidationError

APT = (
    "export DEBIAN_FRONTEND=noninteractive; apt-get update && "
    "apt-get -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold dist-upgrade"
)
DNF = "if command -v dnf >/dev/null; then dnf -y upgrade; else yum -y update; fi"
COMMANDS = {
    "debian": APT,
    "devuan": APT,
    "ubuntu": APT,
    "alpine": "apk update && apk upgrade --available",
    "centos": DNF,
    "fedora": DNF,
    "archlinux": "pacman -Syu --noconfirm",
    "opensuse": "zypper --non-interactive refresh && zypper --non-interactive update",
    "gentoo": "emerge --sync && emerge --update --deep --newuse @world",
}


def upgrade_command(ostype: str | None) -> list[str]:
    """The argv that upgrades every package of a container of ``ostype``; ValidationError naming it if none."""
    script = COMMANDS.get(ostype or "")
    if script is None:
        known = ", ".join(sorted(COMMANDS))
        raise ValidationError(
            f"ostype '{ostype or 'unset'}': no package manager Caisson knows how to drive (known: {known})",
            key="ostype",
        )
    return ["/bin/sh", "-c", script]
