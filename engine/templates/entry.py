"""What every template source yields: :class:`Entry`, and the checks its fields pass.

Every entry's location is resolved against its index's URL and must stay on
the index's server (same scheme and host, no ``..`` segment), so a tampered
or careless index cannot point a download elsewhere.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from urllib.parse import unquote, urljoin, urlsplit

from engine.errors import ValidationError

TEMPLATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*\.tar(\.(gz|xz|zst))?")  # .tar: an OCI archive, as in Proxmox
_HEX = re.compile(r"[0-9a-fA-F]+")
CHECKSUM_LENGTHS = {"sha512": 128, "sha256": 64, "md5": 32}


@dataclass(frozen=True)
class Entry:
    """One downloadable template, whatever index it came from."""

    name: str
    package: str
    version: str
    os: str
    section: str
    type: str
    arch: str
    location: str
    source_id: str
    description: str = ""
    headline: str = ""  # a Description's first line; ``description`` is the rest
    infopage: str = ""
    manageurl: str = ""
    certified: bool = False
    sha512: str | None = None
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None

    def checksum(self) -> tuple[str, str]:
        """The strongest checksum the index gave, as (algorithm, hex digest)."""
        for algo in ("sha512", "sha256", "md5"):
            value = getattr(self, algo)
            if value:
                return algo, value
        raise ValidationError(f"template {self.name} has no checksum", key="checksum")

    def to_dict(self) -> dict:
        return asdict(self)


def check_template_name(name: str) -> str:
    """Refuse a template file name that could be a path or a hidden/odd file."""
    if not isinstance(name, str) or "/" in name or "\0" in name or name.startswith("."):
        raise ValidationError(f"invalid template name {name!r}", key="name")
    if not TEMPLATE_NAME.fullmatch(name):
        raise ValidationError(
            f"invalid template name {name!r}: expected NAME.tar.gz, .tar.xz, .tar.zst or .tar (an OCI archive)",
            key="name",
        )
    return name


def check_checksum(algo: str, value: str, where: str) -> str:
    value = value.strip().lower()
    if len(value) != CHECKSUM_LENGTHS[algo] or not _HEX.fullmatch(value):
        raise ValidationError(f"{where}: bad {algo} checksum (want {CHECKSUM_LENGTHS[algo]} hex digits)", key=algo)
    return value


def resolve_location(index_url: str, location: str, where: str = "Location") -> str:
    """Join ``location`` to ``index_url``; refuse one that leaves the index's server or climbs with ``..``."""
    base = urlsplit(index_url)
    loc = urlsplit(location)
    if loc.scheme or loc.netloc:
        if (loc.scheme, loc.netloc) != (base.scheme, base.netloc):
            raise ValidationError(f"{where}: {location!r} points to another server", key="Location")
    if ".." in unquote(loc.path).split("/") or "\\" in location or "\0" in unquote(location):
        raise ValidationError(f"{where}: {location!r} escapes the server's template directory", key="Location")
    url = urljoin(index_url, location)
    joined = urlsplit(url)
    if (joined.scheme, joined.netloc) != (base.scheme, base.netloc):
        raise ValidationError(f"{where}: {location!r} points to another server", key="Location")
    return url
