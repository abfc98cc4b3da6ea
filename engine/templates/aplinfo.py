"""The ``aplinfo`` source kind: Proxmox's appliance index (``aplinfo.dat``), its detached signature.

The index is a list of RFC 822-like paragraphs separated by blank lines::

    Package: debian-12-standard
    Version: 12.7-1
    Location: system/debian-12-standard_12.7-1_amd64.tar.zst
    sha512sum: 0123...
    Infopage: https://pve.proxmox.com/wiki/Linux_Container
    Description: Debian 12 Bookworm (standard)
     A small Debian Bookworm system including all standard packages.

Proxmox's own index opens with a record that is no template
(``Package: pve-web-news``); such records are skipped (:func:`read_aplinfo`).

Every entry's ``Location`` is resolved against the index URL and must stay
on the index's server (:func:`engine.templates.entry.resolve_location`).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

from engine.errors import HostError, ValidationError
from engine.templates.download import DownloadError, fetch
from engine.templates.entry import Entry, check_checksum, check_template_name, resolve_location
from engine.templates.sources import Index, Source, register

_FIELD = re.compile(r"([A-Za-z][A-Za-z0-9_-]*):[ \t]*(.*)")


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


NEWS_PACKAGE = "pve-web-news"  # Proxmox's record of the news its web interface once showed
_VERSION = re.compile(r"\d[A-Za-z0-9.+\-:~]*")  # as pveam checks a template's Version


class News(NamedTuple):
    """A source's news record (``Package: pve-web-news``): a headline and its text, an HTML fragment as
    published; shown as plain text, never as markup."""

    source_id: str
    headline: str
    text: str


class Catalog(NamedTuple):
    """What an index holds: its templates, its news, and why each other record was skipped."""

    entries: list[Entry]
    news: list[News]
    skipped: list[str]


def _description(value: str) -> tuple[str, str]:
    """``Description:``'s first line is the headline, its continuation lines the long text, joined with
    spaces as ``pveam`` does (a lone ``.`` line, Debian's paragraph break, becomes a blank line)."""
    headline, _, rest = value.partition("\n")
    long = " ".join("\n\n" if line == "" else line for line in rest.split("\n"))
    return headline.strip(), re.sub(r" ?\n\n ?", "\n\n", long).strip()


def _not_a_template(fields: dict[str, str]) -> str | None:
    """Why a record is no template (Proxmox's indexes also hold news and, in the past, other kinds)."""
    kind = fields.get("type", "lxc").lower()
    if kind != "lxc":
        return f"type {fields['type']!r} is not a container template"
    if not any(fields.get(k) for k in ("version", "location", "sha512sum", "md5sum")):
        return "not a template record (no Version, Location or checksum)"
    return None


def read_aplinfo(text: str, index_url: str, source_id: str) -> Catalog:
    """Read ``aplinfo.dat`` as Proxmox and TurnKey publish it.

    Records that are no template (the ``pve-web-news`` record, records of another ``Type``, records
    without any template field) are skipped, the news kept; a template record with a missing or bad
    field is refused, naming the paragraph (1-based) and the field, and so is an index without a
    template (an error page read as an index must not empty the catalog)."""
    if "\0" in text:
        raise ValidationError(f"source {source_id}: the index is not an aplinfo file (binary data)")
    entries, news, skipped = [], [], []
    paragraphs = _paragraphs(text)
    for number, lines in enumerate(paragraphs, 1):
        where = f"source {source_id}, aplinfo paragraph {number}"
        fields = _fields(lines, where)
        headline, description = _description(fields.get("description", ""))
        if fields.get("package") == NEWS_PACKAGE:
            if headline or description:
                news.append(News(source_id, headline, description))
            continue
        reason = _not_a_template(fields)
        if reason is not None:
            skipped.append(f"paragraph {number} ({fields.get('package') or 'no Package'}): {reason}")
            continue
        entries.append(_entry(fields, index_url, source_id, where, headline, description))
    if not paragraphs:
        raise ValidationError(f"source {source_id}: the index holds no aplinfo paragraph")
    if not entries:
        raise ValidationError(f"source {source_id}: the index lists no template ({len(skipped)} other records)")
    return Catalog(entries, news, skipped)


def _entry(
    fields: dict[str, str], index_url: str, source_id: str, where: str, headline: str, description: str
) -> Entry:
    for required in ("package", "version", "location"):
        if not fields.get(required):
            raise ValidationError(f"{where}: missing field {required.capitalize()}", key=required)
    if not _VERSION.fullmatch(fields["version"]):
        raise ValidationError(
            f"{where}: field Version {fields['version'][:40]!r} does not start with a digit "
            "or has other characters than letters, digits and .+-:~",
            key="version",
        )
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
    return Entry(
        name=name,
        package=fields["package"],
        version=fields["version"],
        os=fields.get("os", ""),
        section=fields.get("section", "system") or "system",
        type="lxc",
        arch=fields.get("architecture", ""),
        location=url,
        source_id=source_id,
        description=description,
        headline=headline,
        infopage=fields.get("infopage", ""),
        manageurl=fields.get("manageurl", ""),
        certified=fields.get("certified", "").lower() == "yes",
        sha512=sums.get("sha512"),
        md5=sums.get("md5"),
    )


def parse_aplinfo(text: str, index_url: str, source_id: str) -> list[Entry]:
    """The templates of ``aplinfo.dat`` (see :func:`read_aplinfo`)."""
    return read_aplinfo(text, index_url, source_id).entries


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
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except FileNotFoundError:
            raise HostError("gpgv is not installed; it is needed to check the index signature") from None
        except subprocess.TimeoutExpired:
            raise HostError("gpgv did not finish in 60 s") from None
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ValidationError(f"bad signature on the aplinfo index: {detail}", key="signature")


@register
class AplinfoSource(Source):
    """``url`` names ``aplinfo.dat`` or ``aplinfo.dat.gz``; with a ``keyring``, its signature is checked."""

    type = "aplinfo"

    def fetch(self, max_bytes: int) -> Index:
        """The index as the URL names it (``aplinfo.dat`` or ``aplinfo.dat.gz``), else the other form;
        with a keyring, its detached signature, checked as ``pveam`` does."""
        plain_url = self.url[:-3] if self.url.endswith(".gz") else self.url
        other = plain_url if self.url.endswith(".gz") else self.url + ".gz"
        raw, error = None, None
        for url in (self.url, other):
            try:
                raw = fetch(url, max_bytes=max_bytes)
                break
            except DownloadError as exc:
                error = error or exc
        if raw is None:
            assert error is not None
            raise error
        data = _gunzip(raw, self.id, max_bytes) if raw[:2] == b"\x1f\x8b" else raw
        files = {"aplinfo.dat": data}
        entries = self.entries(files.__getitem__)
        if self.keyring:
            files["aplinfo.dat.sig"] = self._check_signature(plain_url, data, raw)
        return Index(files, bool(self.keyring), entries)

    def entries(self, read: Callable[[str], bytes]) -> list[Entry]:
        return parse_aplinfo(_text(read("aplinfo.dat"), self.id), self.url, self.id)

    def news(self, read: Callable[[str], bytes]) -> list[News]:
        return read_aplinfo(_text(read("aplinfo.dat"), self.id), self.url, self.id).news

    def _check_signature(self, plain_url: str, data: bytes, raw: bytes) -> bytes:
        """Proxmox publishes ``aplinfo.dat.asc`` beside ``aplinfo.dat.gz``, signing the uncompressed
        index (``pveam`` gunzips, then runs gpgv on the result); a signature named after the compressed
        file (``aplinfo.dat.gz.asc``) may sign either. Returns the signature that verified."""
        names = [plain_url + ".asc", plain_url + ".gpg"]
        if raw is not data:
            names.append(plain_url + ".gz.asc")
        for url in names:
            try:
                signature = fetch(url, max_bytes=1 << 20)
            except DownloadError:
                continue
            try:
                verify_signature(data, signature, Path(self.keyring or ""))
            except ValidationError:
                if raw is data:
                    raise
                verify_signature(raw, signature, Path(self.keyring or ""))  # over the .gz itself
            return signature
        raise ValidationError(
            f"source {self.id}: no signature at {plain_url}.asc, .gpg" + (" or .gz.asc" if raw is not data else ""),
            key="signature",
        )


def _gunzip(raw: bytes, source_id: str, max_bytes: int) -> bytes:
    """A gzip-compressed index, refusing a corrupt one or one that expands beyond ``max_bytes``."""
    decoder = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = decoder.decompress(raw, max_bytes + 1)
        if len(data) > max_bytes or decoder.unconsumed_tail:
            raise ValidationError(f"source {source_id}: the index expands beyond {max_bytes} bytes")
        data += decoder.flush()
    except zlib.error as exc:
        raise ValidationError(f"source {source_id}: the index is not valid gzip: {exc}") from None
    if not decoder.eof:
        raise ValidationError(f"source {source_id}: the gzip index is cut short")
    return data


def _text(data: bytes, source_id: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError(f"source {source_id}: the index is not an aplinfo file (not UTF-8 text)") from None
