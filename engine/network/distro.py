"""The container's own network configuration, written at each start before its init runs.

As Proxmox's per-distribution setup does, the engine picks a family from the
container's ``/etc/os-release`` and writes what that family's networking
reads, so that a container asking for ``ip=dhcp``/``ip6=dhcp``/``ip6=auto``
runs its own client, and its own networking agrees with its config instead of
fighting it on restart:

- ``ifupdown`` (Debian, Devuan, Alpine, and Ubuntu images that still use it):
  ``/etc/network/interfaces``, the engine's stanzas between Proxmox's marker
  comments ``# --- BEGIN PVE ---`` / ``# --- END PVE ---`` (so a container moved
  from Proxmox keeps one block); lines outside the block are the user's and
  survive every start.  The first time, stanzas for the managed interfaces
  found outside (a template's ``iface eth0 inet dhcp``) are dropped.  This
  family sets static addresses itself: the engine then only plugs the links.
- ``networkd`` (Ubuntu 17.10 on, Arch, Debian without ifupdown):
  ``/etc/systemd/network/<name>.network`` per interface, marked as the
  engine's; files without the mark are left alone.  Also sets its own addresses.
- ``busybox`` (the busybox template: no network manager at all): the engine
  sets static addresses from outside as before; for ``ip=dhcp`` a marked block
  in ``/etc/inittab`` has busybox init respawn ``udhcpc`` in the foreground
  with the engine's event script (``/etc/caisson/udhcpc.script``), which adds
  the lease's address and router and renews it.  Busybox's ``ifup`` would need
  an rcS that calls it and a default script the template does not ship; an
  inittab line needs neither, and init restarts the client if it dies.
- anything else: only ``/etc/resolv.conf``; static addresses from outside.

``/etc/resolv.conf`` gets ``nameserver``/``searchdomain`` from the config, or
the host's, without loopback resolvers (127.0.0.53 means nothing inside),
between the same markers; a symlinked resolv.conf (systemd-resolved) is the
container's own and is left alone.

Everything here runs inside the container after pivot_root, as its root, before
init: every path is opened beneath ``/`` one component at a time without
following symlinks (``engine.rootfs.open_beneath``), and replaced atomically.
"""
from __future__ import annotations

import errno
import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass

from engine.network.nics import Nic

BEGIN, END = "# --- BEGIN PVE ---", "# --- END PVE ---"
MANAGED = "# Managed by caisson: rewritten at each start from the container's netN settings."
UDHCPC_SCRIPT = "etc/caisson/udhcpc.script"


@dataclass(frozen=True)
class Dns:
    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()


def dns_settings(nameserver: str | None, searchdomain: str | None, host_resolv: str | None) -> Dns:
    """The config's keys (space- or comma-separated, as Proxmox takes them), else the host's resolv.conf
    without loopback resolvers.  A bad nameserver raises ValueError naming it."""
    def split(value: str) -> tuple[str, ...]:
        return tuple(v for v in value.replace(",", " ").split() if v)

    if nameserver or searchdomain:
        servers = split(nameserver or "")
        for server in servers:
            try:
                ipaddress.ip_address(server)
            except ValueError:
                raise ValueError(f"nameserver: '{server}' is not an IP address") from None
        return Dns(servers, split(searchdomain or ""))
    servers, search = [], []
    for line in (host_resolv or "").splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                if not ipaddress.ip_address(words[1].split("%")[0]).is_loopback:
                    servers.append(words[1])
            except ValueError:
                continue
        elif words and words[0] in ("search", "domain"):
            search = words[1:]
    return Dns(tuple(servers), tuple(search))


# ---- text: pure functions, tested without a container -------------------------------------------
def replace_block(text: str | None, block: str, drop: Callable[[str], str] | None = None) -> str:
    """``text`` with the marked block replaced by ``block`` (removed if empty), or ``block`` appended.

    ``drop`` cleans the text outside when there was no block yet (adopting a file for the first time).
    """
    body = block and f"{BEGIN}\n{block.rstrip()}\n{END}\n"
    text = text or ""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == BEGIN]
    ends = [i for i, line in enumerate(lines) if line.strip() == END]
    if starts and ends and ends[-1] > starts[0]:
        return "".join(lines[:starts[0]]) + body + "".join(lines[ends[-1] + 1:])
    if drop is not None:
        text = drop(text)
    if text and not text.endswith("\n"):
        text += "\n"
    if text and body and not text.endswith("\n\n"):
        text += "\n"
    return text + body


def outside_block(text: str) -> str:
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == BEGIN]
    ends = [i for i, line in enumerate(lines) if line.strip() == END]
    if starts and ends and ends[-1] > starts[0]:
        return "".join(lines[:starts[0]] + lines[ends[-1] + 1:])
    return text


def resolv_block(dns: Dns) -> str:
    lines = [f"search {' '.join(dns.search)}"] if dns.search else []
    return "\n".join(lines + [f"nameserver {server}" for server in dns.nameservers])


IFUPDOWN_STANZAS = ("iface", "auto", "allow-hotplug", "allow-auto", "mapping")


def drop_stanzas(names: set[str]) -> Callable[[str], str]:
    """Remove ``auto``/``allow-*`` mentions and ``iface`` stanzas of ``names`` (with their option lines)."""
    def drop(text: str) -> str:
        out, skipping = [], False
        for line in text.splitlines(keepends=True):
            words = line.split()
            if words and words[0] in IFUPDOWN_STANZAS or words[:1] == ["source"] or words[:1] == ["source-directory"]:
                skipping = False
                if words[0] == "iface" and len(words) > 1 and words[1] in names:
                    skipping = True
                    continue
                if words[0] in ("auto", "allow-hotplug", "allow-auto"):
                    kept = [w for w in words[1:] if w not in names]
                    if not kept:
                        continue
                    line = f"{words[0]} {' '.join(kept)}\n"
            elif skipping and words and not words[0].startswith("#"):
                continue
            out.append(line)
        return "".join(out)

    return drop


def ifupdown_block(nics: list[Nic], with_lo: bool) -> str:
    stanzas = ["auto lo\niface lo inet loopback"] if with_lo else []
    for nic in nics:
        lines = [] if nic.link_down else [f"auto {nic.name}"]
        if nic.ipv4 is not None:
            lines.append(f"iface {nic.name} inet static\n\taddress {nic.ipv4}" + (f"\n\tgateway {nic.gw}" if nic.gw
                                                                                  else ""))
        elif nic.ip in ("dhcp", "manual"):
            lines.append(f"iface {nic.name} inet {nic.ip}")
        elif nic.ip6 is None:
            lines.append(f"iface {nic.name} inet manual")
        if nic.ipv6 is not None:
            lines.append(f"iface {nic.name} inet6 static\n\taddress {nic.ipv6}" + (f"\n\tgateway {nic.gw6}"
                                                                                   if nic.gw6 else ""))
        elif nic.ip6 in ("auto", "dhcp", "manual"):
            lines.append(f"iface {nic.name} inet6 {nic.ip6}")
        stanzas.append("\n".join(lines))
    return "\n\n".join(stanzas)


def networkd_file(nic: Nic, dns: Dns) -> str:
    dhcp = {(True, True): "yes", (True, False): "ipv4", (False, True): "ipv6"}.get(
        (nic.ip == "dhcp", nic.ip6 == "dhcp"), "no")
    lines = [MANAGED, "[Match]", f"Name = {nic.name}", "", "[Network]", f"Description = Interface {nic.name} "
             "configured by caisson"]
    for cidr, gw in ((nic.ipv4, nic.gw), (nic.ipv6, nic.gw6)):
        if cidr is not None:
            lines.append(f"Address = {cidr}")
        if gw:
            lines.append(f"Gateway = {gw}")
    lines.append(f"DHCP = {dhcp}")
    lines.append(f"IPv6AcceptRA = {'true' if nic.ip6 in ('auto', 'dhcp') else 'false'}")
    lines += [f"DNS = {server}" for server in dns.nameservers]
    if dns.search:
        lines.append(f"Domains = {' '.join(dns.search)}")
    return "\n".join(lines) + "\n"


UDHCPC_EVENTS = f"""#!/bin/sh
{MANAGED}
# busybox udhcpc event script; run as "udhcpc.script run IFACE" from inittab it runs the client itself.
if [ "$1" = run ]; then
	/sbin/udhcpc -f -i "$2" -x hostname:"$(hostname)" -s "$0"
	sleep 2  # init respawns us: not in a tight loop if the interface is gone
	exit 0
fi
case "$1" in
	deconfig)
		ip -4 addr flush dev "$interface" scope global 2>/dev/null
		ip link set "$interface" up
		;;
	bound|renew)
		ip -4 addr flush dev "$interface" scope global 2>/dev/null
		ip addr add "$ip/${{mask:-24}}" dev "$interface"
		for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
		;;
esac
exit 0
"""


def inittab_block(nics: list[Nic]) -> str:
    return "\n".join(f"::respawn:/{UDHCPC_SCRIPT} run {nic.name}" for nic in nics if nic.ip == "dhcp")


# ---- files, beneath the container's root ----------------------------------------------------
def read_file(relpath: str) -> str | None:
    """The file's text, or None if missing; refuses a symlink anywhere on the path (OSError ELOOP)."""
    from engine.rootfs import open_beneath

    head, _, name = relpath.rpartition("/")
    try:
        dir_fd = open_beneath(head, create=False) if head else os.open(".", os.O_PATH | os.O_DIRECTORY)
    except FileNotFoundError:
        return None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "rb") as handle:
        return handle.read().decode(errors="replace")


def write_file(relpath: str, text: str, mode: int = 0o644) -> None:
    """Replace the file atomically (temp file and rename in its directory, created if missing).

    A symlink anywhere on the path, the file itself included, is refused (ELOOP), never followed.
    """
    from engine.rootfs import open_beneath

    head, _, name = relpath.rpartition("/")
    dir_fd = open_beneath(head) if head else os.open(".", os.O_PATH | os.O_DIRECTORY)
    try:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None:
            import stat

            if stat.S_ISLNK(st.st_mode):
                raise OSError(errno.ELOOP, f"'{relpath}' is a symlink in the container's root")
            mode = stat.S_IMODE(st.st_mode)
        tmp = f".{name}.caisson-tmp"
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
        try:
            os.fchmod(fd, mode)
            os.write(fd, text.encode())
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def remove_file(relpath: str) -> None:
    from engine.rootfs import open_beneath

    head, _, name = relpath.rpartition("/")
    try:
        dir_fd = open_beneath(head, create=False)
    except FileNotFoundError:
        return
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    finally:
        os.close(dir_fd)


def update_file(relpath: str, change: Callable[[str | None], str | None], mode: int = 0o644) -> bool:
    """Read, change, write back if different.  False if the path is a symlink (left alone)."""
    try:
        old = read_file(relpath)
        new = change(old)
        if new is not None and new != old:
            write_file(relpath, new, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return False
        raise
    return True


def exists(relpath: str) -> bool:
    """Does the path exist inside (symlinks at the end count, resolved as the container would)."""
    return os.path.lexists("/" + relpath)


# ---- the families ---------------------------------------------------------------------------
class DistroNetwork:
    """One family of distributions: what it reads, and whether it sets static addresses itself."""

    name = "generic"
    configures_addresses = False  # True: the container's networking sets them; the engine only plugs links

    def write(self, nics: list[Nic], dns: Dns) -> None:
        """Write this family's files (inside the container, cwd = its root)."""
        write_resolv_conf(dns)


def write_resolv_conf(dns: Dns) -> None:
    if not dns.nameservers and not dns.search:
        return
    update_file("etc/resolv.conf", lambda old: replace_block(old, resolv_block(dns),
                                                             drop=lambda _text: ""))


class Ifupdown(DistroNetwork):
    name = "ifupdown"
    configures_addresses = True
    path = "etc/network/interfaces"

    def write(self, nics: list[Nic], dns: Dns) -> None:
        names = {nic.name for nic in nics}

        def change(old: str | None) -> str | None:
            if not nics and (old is None or BEGIN not in old):
                return None
            rest = drop_stanzas(names)(outside_block(old or "")) if BEGIN not in (old or "") else outside_block(old)
            with_lo = not any(line.split()[:3] == ["iface", "lo", "inet"] for line in rest.splitlines())
            return replace_block(old, ifupdown_block(nics, with_lo) if nics else "", drop=drop_stanzas(names))

        update_file(self.path, change)
        super().write(nics, dns)


class Networkd(DistroNetwork):
    name = "networkd"
    configures_addresses = True
    directory = "etc/systemd/network"

    def write(self, nics: list[Nic], dns: Dns) -> None:
        wanted = {f"{nic.name}.network": networkd_file(nic, dns) for nic in nics}
        try:
            from engine.rootfs import open_beneath

            path_fd = open_beneath(self.directory, create=False)
            try:
                fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=path_fd)
            finally:
                os.close(path_fd)
            try:
                present = os.listdir(fd)
            finally:
                os.close(fd)
        except FileNotFoundError:
            present = []
        for name in present:  # ours from an interface that is gone
            if name.endswith(".network") and name not in wanted:
                text = read_file(f"{self.directory}/{name}")
                if text is not None and MANAGED in text:
                    remove_file(f"{self.directory}/{name}")
        for name, text in wanted.items():
            update_file(f"{self.directory}/{name}",
                        lambda old, text=text: text if old is None or MANAGED in old else None)
        super().write(nics, dns)


class Busybox(DistroNetwork):
    name = "busybox"

    def write(self, nics: list[Nic], dns: Dns) -> None:
        block = inittab_block(nics)
        if block:
            update_file(UDHCPC_SCRIPT, lambda _old: UDHCPC_EVENTS, mode=0o755)
        update_file("etc/inittab", lambda old: None if old is None or (not block and BEGIN not in old)
                    else replace_block(old, block))
        super().write(nics, dns)


# os-release ID (or ID_LIKE) -> a chooser given what exists inside
def _debian_like(exists_: Callable[[str], bool]) -> DistroNetwork:
    if exists_("sbin/ifup") or exists_("usr/sbin/ifup"):
        return Ifupdown()
    if exists_("lib/systemd/systemd-networkd") or exists_("usr/lib/systemd/systemd-networkd"):
        return Networkd()
    return DistroNetwork()


def _networkd_if_present(exists_: Callable[[str], bool]) -> DistroNetwork:
    if exists_("lib/systemd/systemd-networkd") or exists_("usr/lib/systemd/systemd-networkd"):
        return Networkd()
    return DistroNetwork()


REGISTRY: dict[str, Callable[[Callable[[str], bool]], DistroNetwork]] = {}


def register(*ids: str):
    def decorate(chooser):
        for name in ids:
            REGISTRY[name] = chooser
        return chooser
    return decorate


register("debian", "devuan", "kali", "raspbian")(_debian_like)
register("ubuntu")(lambda exists_: Networkd() if _networkd_if_present(exists_).name == "networkd"
                   else _debian_like(exists_))
register("alpine")(lambda _exists: Ifupdown())
register("arch", "archlinux")(_networkd_if_present)
register("busybox")(lambda _exists: Busybox())


def parse_os_release(text: str | None) -> dict[str, str]:
    values = {}
    for line in (text or "").splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            values[key] = value.strip().strip("\"'")
    return values


def choose(os_release: str | None, exists_: Callable[[str], bool] = exists) -> DistroNetwork:
    """The family for this os-release text: its ID, else the first of ID_LIKE we know, else generic."""
    values = parse_os_release(os_release)
    for name in [values.get("ID", "").lower(), *values.get("ID_LIKE", "").lower().split()]:
        if name in REGISTRY:
            return REGISTRY[name](exists_)
    return DistroNetwork()


def os_release() -> str | None:
    for path in ("etc/os-release", "usr/lib/os-release"):
        try:
            text = read_file(path)
        except OSError:
            continue
        if text is not None:
            return text
    return None
