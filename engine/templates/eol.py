"""Distribution end of life: which releases have lost security support, for templates and containers.

The data ships with Caisson (``engine/templates/data/eol.json``: per
os-release ``ID``, per release, the end of regular support ``eol`` and of
extended support ``lts`` where there is one; Debian and Ubuntu taken from
distro-info-data) and is updated with the catalog; a node may hold a newer
copy in ``<root>/template/eol.json``, whose entries win.

A release is matched by the major version for Debian, the Red Hat family
and Fedora, and by ``major.minor`` for Ubuntu and Alpine.  Templates are
matched by their Proxmox-style name (``debian-11-standard_11.7-1_amd64``,
``ubuntu-22.04-standard_...``, ``alpine-3.18-default_...``); containers by
their ``/etc/os-release``, read inside the container without following any
symlink out of it (``engine.volumes.open_inside``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

from engine.distro.text import parse_os_release

SHIPPED = Path(__file__).with_name("data") / "eol.json"
ALIASES = {"rockylinux": "rocky", "alma": "almalinux", "centos-stream": "centos", "opensuse": "opensuse-leap"}
MINOR_KEYED = ("ubuntu", "alpine")
TEMPLATE_RE = re.compile(r"^(?P<id>[a-z][a-z-]*?)-(?P<version>\d+(?:\.\d+)*)[-_]")
MAX_OS_RELEASE = 64 * 1024


@dataclass(frozen=True)
class Release:
    distro: str
    version: str
    name: str = ""
    eol: date | None = None
    lts: date | None = None

    def ended(self, today: date) -> bool:
        return self.eol is not None and self.eol <= today

    def as_dict(self, today: date) -> dict:
        data = asdict(self)
        data.update(eol=self.eol and self.eol.isoformat(), lts=self.lts and self.lts.isoformat())
        data["end_of_life"] = self.ended(today)
        return data


def load(root: Path | None = None) -> dict:
    """The shipped data with the node's newer copy (``<root>/template/eol.json``) over it."""
    data = json.loads(SHIPPED.read_text())
    local = Path(root) / "template" / "eol.json" if root else None
    if local is not None and local.is_file():
        for distro, releases in json.loads(local.read_text()).items():
            if isinstance(releases, dict):
                data.setdefault(distro, {}).update(releases)
    return data


def _key(distro: str, version: str) -> str:
    parts = version.split(".")
    return ".".join(parts[:2]) if distro in MINOR_KEYED else parts[0]


def release(data: dict, distro: str, version: str) -> Release | None:
    """The release's dates, or None when the data does not know it (a rolling or unknown distribution)."""
    distro = ALIASES.get(distro.lower(), distro.lower())
    entry = (data.get(distro) or {}).get(_key(distro, version or ""))
    if not isinstance(entry, dict):
        return None
    day = lambda key: date.fromisoformat(entry[key]) if entry.get(key) else None  # noqa: E731
    return Release(distro, _key(distro, version), entry.get("name", ""), day("eol"), day("lts"))


def of_template(data: dict, name: str) -> Release | None:
    """A template's release from its name; None for one the data does not know (busybox, custom ones)."""
    match = TEMPLATE_RE.match(name)
    return release(data, match["id"], match["version"]) if match else None


def read_os_release(root_fd: int) -> dict[str, str]:
    """``etc/os-release`` (or ``usr/lib/os-release``) below a container's root fd; symlinks are not followed."""
    from engine.volumes import open_inside

    for directory in ("etc", "usr/lib"):
        try:
            parent = open_inside(root_fd, directory)
        except (OSError, ValueError):
            continue
        try:
            fd = os.open("os-release", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=parent)
        except OSError:
            continue
        finally:
            os.close(parent)
        try:
            with os.fdopen(fd, "rb") as handle:
                return parse_os_release(handle.read(MAX_OS_RELEASE).decode(errors="replace"))
        except OSError:
            continue
    return {}


def container_os_release(engine, ctid: int) -> dict[str, str]:
    """ID, VERSION_ID and PRETTY_NAME of a container: through its init's root when it runs, else from its
    rootfs directory where the storage keeps one; {} when neither can be read."""
    status = engine.status(ctid, stats=False)
    try:
        if status.pid:
            root = os.open(f"/proc/{status.pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        else:
            path = engine._rootfs(engine.config(ctid))
            root = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except Exception:  # noqa: BLE001 - an image not mounted, a container gone: nothing known
        return {}
    try:
        values = read_os_release(root)
    finally:
        os.close(root)
    return {k: values[k] for k in ("ID", "VERSION_ID", "PRETTY_NAME") if k in values}
