"""Custom templates: a stopped container's rootfs packed as a template, its identity cleared.

Owners are shifted back from the container's user namespace to plain ids (and
file capabilities back to the v2 form a normal rootfs carries), so the archive
is like any downloaded template. What identifies the container is left out:
SSH host keys (the engine runs the container's ``ssh-keygen -A`` before init at its next start),
``/etc/machine-id`` (emptied: systemd writes a new one at first boot), the
hostname (set by the engine at every start), DHCP leases and shell history;
``lost+found`` (the file system's, on an image volume) is left out too.
The tree is read through the storage driver (``Driver.tree``): an image or
overlay volume is mounted read-only in a private mount namespace for the packing.
The MAC lives in the container's config, not in its rootfs.
"""

from __future__ import annotations

import fnmatch
import io
import tarfile
from pathlib import Path

from engine.builders.common import add_tree, atomic_file, zstd_tar
from engine.errors import AlreadyExists, ValidationError
from engine.idmap import IdMap
from engine.templates.entry import check_template_name

DROPPED = [
    "./lost+found",
    "./etc/ssh/ssh_host_*",
    "./var/lib/dhcp/*.leases",
    "./var/lib/dhcpcd/*",
    "./root/.bash_history",
    "./root/.ash_history",
    "./var/lib/systemd/random-seed",
]
EMPTIED = {"./etc/machine-id", "./var/lib/dbus/machine-id"}
HOSTNAME = b"localhost\n"
CAP_XATTR = "SCHILY.xattr.security.capability"


def _unshift(info: tarfile.TarInfo, idmap: IdMap | None) -> None:
    if idmap is None:
        return
    info.uid = idmap.container_uid(info.uid)
    info.gid = idmap.container_gid(info.gid)
    caps = info.pax_headers.get(CAP_XATTR)
    if caps is not None:
        raw = caps.encode("utf-8", "surrogateescape")
        if len(raw) == 24 and raw[3] == 3 and int.from_bytes(raw[20:24], "little") == idmap.host_uid(0):
            info.pax_headers[CAP_XATTR] = (raw[:3] + b"\x02" + raw[4:20]).decode("utf-8", "surrogateescape")


def make_template(rootfs: Path, idmap: IdMap | None, dest_dir: Path, name: str) -> Path:
    """Pack ``rootfs`` (of a stopped container) into ``dest_dir/name`` atomically; returns the path."""
    check_template_name(name)
    if not name.endswith(".tar.zst"):
        raise ValidationError(f"template name {name!r}: custom templates are written as .tar.zst", key="name")
    target = dest_dir / name
    if target.exists():
        raise AlreadyExists(f"template {name} already exists in the store")

    def transform(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if any(fnmatch.fnmatchcase(info.name, pattern) for pattern in DROPPED):
            return None
        _unshift(info, idmap)
        if info.isreg() and info.name in EMPTIED:
            info.size = 0
        return info

    dest_dir.mkdir(parents=True, exist_ok=True)
    with atomic_file(target) as fileobj, zstd_tar(fileobj, level=3, threads=-1) as tar:
        add_tree(tar, rootfs, transform)
        hostname = tarfile.TarInfo("./etc/hostname")
        hostname.size, hostname.mode = len(HOSTNAME), 0o644
        if (rootfs / "etc").is_dir() and not (rootfs / "etc").is_symlink():
            tar.addfile(hostname, io.BytesIO(HOSTNAME))  # a later member replaces the container's own
    return target
