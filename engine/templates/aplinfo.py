"""Parse Proxmox's appliance index (``aplinfo.dat``) and check its detached signature.

The index is a list of RFC 822-like paragraphs separated by blank lines::

    Package: debian-12-standard
    Version: 12.7-1
    Location: system/debian-12-standard_12.7-1_amd64.tar.zst
    sha512sum: 0123...
    Description: Debian 12 Bookworm (standard)
     A small Debian Bookworm system including all standard packages.

Every entry's ``Location`` is resolved against the index URL and must stay
on the index's server (same scheme and host, no ``..`` segment), so a
tampered or careless index cannot point a download elsewhere.
"""
from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

from engine.errors import HostError, ValidationError

TEMPLATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*\.tar\.(gz|xz|zst)")
_FIELD = re.compile(r"([A-Za-z][A-Za-z0-9_-]*):[ \t]*(.*)")
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
    headline: str = ""
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
            f"invalid template name {name!r}: expected NAME.tar.gz, .tar.xz or .tar.zst", key="name")
    return name


def check_checksum(algo: str, value: str, where: str) -> str:
    value = value.strip().lower()
    if len(value) != CHECKSUM_LENGTHS[algo] or not _HEX.fullmatch(value):
        raise ValidationError(
            f"{where}: bad {algo} checksum (want {CHECKSUM_LENGTHS[algo]} hex digits)", key=algo)
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


def _paragraphs(text: str) -> list[list[str]]:
    paragraphs: list[list[str]] = []
    current: list[str] = []
    for line in text.splitlines():
        if line.strip():
            current.append(line)
        elif current:
            paragraphs.append(current)
            current = []
    if current:
        paragraphs.append(current)
    return paragraphs


def _fields(lines: list[str], where: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    last: str | None = None
    for line in lines:
        if line[0] in " \t":
            if last is None:
                raise ValidationError(f"{where}: continuation line before any field: {line.strip()[:60]!r}")
            text = line.strip()
            fields[last] += "\n" + ("" if text == "." else text)
            continue
        match = _FIELD.fullmatch(line)
        if not match:
            raise ValidationError(f"{where}: not an aplinfo field line: {line[:60]!r}")
        last = match.group(1).lower()
        fields[last] = match.group(2).strip()
    return fields


def parse_aplinfo(text: str, index_url: str, source_id: str) -> list[Entry]:
    """Parse ``aplinfo.dat``; a ValidationError names the paragraph (1-based) and field at fault."""
    if "\0" in text:
        raise ValidationError(f"source {source_id}: the index is not an aplinfo file (binary data)")
    entries = []
    for number, lines in enumerate(_paragraphs(text), 1):
        where = f"source {source_id}, aplinfo paragraph {number}"
        fields = _fields(lines, where)
        for required in ("package", "version", "location"):
            if not fields.get(required):
                raise ValidationError(f"{where}: missing field {required.capitalize()}", key=required)
        sums = {}
        for algo in ("sha512", "md5"):
            if fields.get(algo + "sum"):
                sums[algo] = check_checksum(algo, fields[algo + "sum"], f"{where}, field {algo}sum")
        if not sums:
            raise ValidationError(f"{where}: missing field sha512sum (or md5sum)", key="sha512sum")
        url = resolve_location(index_url, fields["location"], f"{where}, field Location")
        name = unquote(urlsplit(url).path).rsplit("/", 1)[-1]
        try:
            check_template_name(name)
        except ValidationError as exc:
            raise ValidationError(f"{where}, field Location: {exc}", key="Location") from None
        entries.append(Entry(
            name=name, package=fields["package"], version=fields["version"], os=fields.get("os", ""),
            section=fields.get("section", "system") or "system", type=fields.get("type", "lxc"),
            arch=fields.get("architecture", ""), location=url, source_id=source_id,
            description=fields.get("description", ""), headline=fields.get("headline", ""),
            sha512=sums.get("sha512"), md5=sums.get("md5")))
    if not entries:
        raise ValidationError(f"source {source_id}: the index holds no aplinfo paragraph")
    return entries


def verify_signature(data: bytes, signature: bytes, keyring: Path) -> None:
    """Check a detached signature with ``gpgv``; raise ValidationError if it does not verify."""
    if not Path(keyring).is_file():
        raise ValidationError(f"keyring {keyring} does not exist", key="keyring")
    with tempfile.TemporaryDirectory(prefix="caisson-aplinfo-") as tmp:
        data_path, sig_path = Path(tmp) / "aplinfo.dat", Path(tmp) / "aplinfo.dat.sig"
        data_path.write_bytes(data)
        sig_path.write_bytes(signature)
        try:
            result = subprocess.run(
                ["gpgv", "--keyring", str(keyring), str(sig_path), str(data_path)],
                capture_output=True, text=True, timeout=60, check=False)
        except FileNotFoundError:
            raise HostError("gpgv is not installed; it is needed to check the index signature") from None
        except subprocess.TimeoutExpired:
            raise HostError("gpgv did not finish in 60 s") from None
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ValidationError(f"bad signature on the aplinfo index: {detail}", key="signature")
