"""The busybox template: a tiny bootable system made from the host's busybox-static.

It exists so that Caisson can create and start a real container with no
network and no download (tests, first run, demos). The whole archive is
generated in memory from one static binary plus a few small files, in
sorted order with a fixed mtime, so two builds from the same busybox are
byte-identical and a build takes a fraction of a second.

Boot: ``/sbin/init`` is a link to ``/bin/busybox``, whose init runs
``/etc/init.d/rcS`` once and then stays PID 1. The inittab respawns
nothing: a container may have no tty yet, and busybox init with nothing to
respawn simply idles (waking once a second to reap orphans) until it gets
SIGUSR2 (poweroff), SIGUSR1 (halt) or SIGTERM (reboot). Nothing is mounted
or unmounted from inside: mounts belong to the engine.
"""

from __future__ import annotations

import io
import re
import struct
import subprocess
import tarfile
import threading
from pathlib import Path

from engine import faults
from engine.builders.common import TEMPLATE_SUFFIX, Progress, atomic_file, check_cancel, debian_arch, zstd_tar
from engine.builders.registry import Builder, register
from engine.errors import HostError

DEFAULT_BUSYBOX = Path("/bin/busybox")

# Bump when the files below change, so a new template gets a new name.
RELEASE = 1

# 2000-01-01T00:00:00Z: fixed, so builds are reproducible; not 0, which
# GNU tar reports as an "implausibly old time stamp".
FIXED_MTIME = 946684800

# Applet paths that must not become links in a container rootfs.
_SKIPPED_APPLETS = {"linuxrc"}

_DIRS: dict[str, int] = {
    "bin": 0o755,
    "dev": 0o755,
    "etc": 0o755,
    "etc/init.d": 0o755,
    "home": 0o755,
    "mnt": 0o755,
    "proc": 0o555,
    "root": 0o700,
    "run": 0o755,
    "sbin": 0o755,
    "sys": 0o555,
    "tmp": 0o1777,
    "usr": 0o755,
    "usr/bin": 0o755,
    "usr/sbin": 0o755,
    "var": 0o755,
    "var/lib": 0o755,
    "var/log": 0o755,
    "var/spool": 0o755,
    "var/tmp": 0o1777,
}

_INITTAB = """\
# busybox init: run rcS once, then stay PID 1.
# Nothing is respawned: a container may have no tty, and busybox init
# idles happily with nothing to respawn. To get a login on a console the
# engine provides, add e.g.  tty1::respawn:/sbin/getty 38400 tty1
# There is no 'umount -a' at shutdown: mounts belong to the engine.
::sysinit:/etc/init.d/rcS
::ctrlaltdel:/sbin/reboot
"""

_RCS = """\
#!/bin/sh
# Early boot. Mounts belong to the engine, so nothing is mounted here.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

if [ -s /etc/hostname ]; then
	hostname -F /etc/hostname
fi
ip link set lo up 2>/dev/null

if [ -x /etc/rc.local ]; then
	/etc/rc.local
fi
exit 0
"""

_PROFILE = """\
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
if [ "$(id -u)" -eq 0 ]; then
	PS1='\\h:\\w# '
else
	PS1='\\h:\\w$ '
fi
"""

_HOSTS = """\
127.0.0.1	localhost
::1		localhost ip6-localhost ip6-loopback
"""

_PASSWD = """\
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""

_GROUP = """\
root:x:0:
nogroup:x:65534:
"""

# '!' locks the password; the empty third field disables password ageing
# (0 there would mean "must change at next login").
_SHADOW = """\
root:!::0:99999:7:::
nobody:!::0:99999:7:::
"""


BUILT = re.compile(r"busybox-(\d+(?:\.\d+)+-\d+)_[a-z0-9]+\.tar\.zst")  # what template_name() makes


def busybox_version(busybox: Path = DEFAULT_BUSYBOX) -> str:
    """The version busybox reports on its first line, e.g. ``1.35.0``."""
    _check_busybox(busybox)
    result = subprocess.run([busybox], capture_output=True, text=True, check=False)
    match = re.search(r"BusyBox v(\d+(?:\.\d+)+)", result.stdout + result.stderr)
    if not match:
        raise HostError(f"{busybox} does not look like busybox: it printed no 'BusyBox vX.Y.Z' banner")
    return match.group(1)


def template_name(version: str, arch: str | None = None) -> str:
    """The Proxmox-style file name, e.g. ``busybox-1.35.0-1_amd64.tar.zst``."""
    return f"busybox-{version}-{RELEASE}_{arch or debian_arch()}{TEMPLATE_SUFFIX}"


def _check_busybox(busybox: Path) -> None:
    if not busybox.is_file():
        raise HostError(
            f"{busybox} not found: the busybox template is built from Debian's static busybox; "
            "install it with 'apt-get install busybox-static'"
        )
    if _elf_interpreter(busybox.read_bytes()):
        raise HostError(
            f"{busybox} is dynamically linked and would not run in a rootfs without libc; "
            "install the static one with 'apt-get install busybox-static'"
        )


def _elf_interpreter(data: bytes) -> bool:
    """Whether an ELF image names a program interpreter (i.e. is dynamically linked)."""
    if data[:4] != b"\x7fELF":
        raise HostError("busybox is not an ELF executable")
    is64 = data[4] == 2
    endian = "<" if data[5] == 1 else ">"
    if is64:
        (phoff,) = struct.unpack_from(endian + "Q", data, 0x20)
        phentsize, phnum = struct.unpack_from(endian + "HH", data, 0x36)
    else:
        (phoff,) = struct.unpack_from(endian + "I", data, 0x1C)
        phentsize, phnum = struct.unpack_from(endian + "HH", data, 0x2A)
    pt_interp = 3
    return any(struct.unpack_from(endian + "I", data, phoff + i * phentsize)[0] == pt_interp for i in range(phnum))


def _applets(busybox: Path) -> list[str]:
    result = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=False)
    if result.returncode != 0 or not result.stdout.strip():
        raise HostError(f"'{busybox} --list-full' failed: {result.stderr.strip() or 'no output'}")
    return [line.strip() for line in result.stdout.splitlines() if line.strip() not in ("", *_SKIPPED_APPLETS)]


def _os_release(version: str) -> str:
    return f'NAME="BusyBox"\nID=busybox\nVERSION_ID={version}\nPRETTY_NAME="BusyBox {version}"\n'


def _members(busybox: Path, version: str) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """Every archive member with its content, sorted by path."""
    entries: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}

    def add(path: str, kind: bytes, mode: int, data: bytes | None = None, link: str = "") -> None:
        info = tarfile.TarInfo("./" + path if path != "." else ".")
        info.type = kind
        info.mode = mode
        info.mtime = FIXED_MTIME
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.linkname = link
        info.size = len(data) if data is not None else 0
        entries[info.name] = (info, data)

    def add_file(path: str, text: str, mode: int = 0o644) -> None:
        add(path, tarfile.REGTYPE, mode, text.encode())

    add(".", tarfile.DIRTYPE, 0o755)
    for path, mode in _DIRS.items():
        add(path, tarfile.DIRTYPE, mode)
    add("bin/busybox", tarfile.REGTYPE, 0o755, busybox.read_bytes())
    for applet in _applets(busybox):
        parts = applet.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if f"./{parent}" not in entries:
                add(parent, tarfile.DIRTYPE, 0o755)
        if applet != "bin/busybox":
            add(applet, tarfile.SYMTYPE, 0o777, link="/bin/busybox")
    # The engine reads this link to tell which init the rootfs runs.
    add("sbin/init", tarfile.SYMTYPE, 0o777, link="/bin/busybox")
    add("var/run", tarfile.SYMTYPE, 0o777, link="/run")
    add("etc/mtab", tarfile.SYMTYPE, 0o777, link="/proc/self/mounts")

    add_file("etc/inittab", _INITTAB)
    add_file("etc/init.d/rcS", _RCS, 0o755)
    add_file("etc/passwd", _PASSWD)
    add_file("etc/group", _GROUP)
    add_file("etc/shadow", _SHADOW, 0o600)
    add_file("etc/hostname", "busybox\n")
    add_file("etc/hosts", _HOSTS)
    add_file("etc/profile", _PROFILE)
    add_file("etc/os-release", _os_release(version))
    add_file("etc/shells", "/bin/sh\n/bin/ash\n")

    return [entries[name] for name in sorted(entries, key=lambda n: n.split("/"))]


def build_busybox(
    dest_dir: Path,
    *,
    force: bool = False,
    busybox: Path = DEFAULT_BUSYBOX,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Build the busybox template into ``dest_dir`` and return the tarball's path.

    An existing tarball of the same name is returned as is unless ``force``.
    ``progress(step_done, 2, text)`` is told of the two steps (collecting the
    members, packing them); ``cancel`` is checked between members, and a
    cancelled build raises :class:`engine.errors.Cancelled` and keeps nothing.
    """
    say = progress or (lambda _done, _total, _text: None)
    dest_dir = Path(dest_dir)
    say(0, 2, f"reading {busybox}")
    version = busybox_version(busybox)
    target = dest_dir / template_name(version)
    if target.exists() and not force:
        say(2, 2, f"{target.name} is already in the store")
        return target
    members = _members(busybox, version)
    check_cancel(cancel, "busybox build")
    say(1, 2, f"packing {len(members)} members into {target.name}")
    dest_dir.mkdir(parents=True, exist_ok=True)
    with atomic_file(target) as fileobj, zstd_tar(fileobj, level=10) as tar:
        for done, (info, data) in enumerate(members, 1):
            check_cancel(cancel, "busybox build")
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
            if done % 64 == 0:
                say(1 + done / len(members), 2, f"packing {target.name}: {done} of {len(members)} members")
        faults.point("build:archive")
    say(2, 2, f"wrote {target.name} ({target.stat().st_size} bytes)")
    return target


class BusyboxBuilder(Builder):
    """No options: the template is whatever the host's busybox-static makes."""

    name = "busybox"
    help = "tiny busybox system from the host's busybox-static (no network)"

    def build(self, dest_dir, options, progress, cancel, force):
        return build_busybox(dest_dir, force=force, progress=progress, cancel=cancel)

    def current_version(self, offer) -> str | None:
        """The host busybox-static's version and this builder's release: an upgraded host package (or a new
        release of the builder) makes the stored template out of date."""
        try:
            return f"{busybox_version()}-{RELEASE}"
        except HostError:
            return None

    def built_version(self, offer, archive: str) -> str | None:
        match = BUILT.fullmatch(archive)
        return match.group(1) if match else None


register(BusyboxBuilder())
