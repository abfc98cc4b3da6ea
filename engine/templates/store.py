"""The template store: index sources, their cached indexes, and the local template cache.

Layout under the state root::

    template/sources.json         [{"id", "type": "aplinfo"|"simplestreams", "url", "keyring"?}]
    template/index/<id>/          the last good index of each source, plus meta.json
    template/cache/               template tarballs (downloaded or built here)

An index is fetched and fully parsed (and its signature checked when the
source has a keyring) in a staging directory before it replaces the cached
one, so a failed or bad update leaves the old index in use.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from engine.config import write_atomic
from engine.errors import NotFound, ValidationError
from engine.templates import aplinfo, simplestreams
from engine.templates.aplinfo import Entry, check_template_name
from engine.templates.download import DownloadError, check_url, fetch

SOURCE_TYPES = ("aplinfo", "simplestreams")
_SOURCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Source:
    id: str
    type: str
    url: str
    keyring: str | None = None

    @classmethod
    def from_dict(cls, data: object, where: str) -> Source:
        if not isinstance(data, dict):
            raise ValidationError(f"{where}: a source must be an object")
        sid, stype, url = data.get("id"), data.get("type"), data.get("url")
        if not isinstance(sid, str) or not _SOURCE_ID.fullmatch(sid):
            raise ValidationError(f"{where}: invalid source id {sid!r}", key="id")
        if stype not in SOURCE_TYPES:
            raise ValidationError(f"{where}: type must be one of {', '.join(SOURCE_TYPES)}", key="type")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValidationError(f"{where}: url must be http:// or https://", key="url")
        keyring = data.get("keyring")
        if keyring is not None and not isinstance(keyring, str):
            raise ValidationError(f"{where}: keyring must be a path", key="keyring")
        return cls(sid, stype, url, keyring)


class TemplateStore:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.base = self.root / "template"
        self.cache = self.base / "cache"
        self.index_dir = self.base / "index"
        self.sources_file = self.base / "sources.json"

    # sources -----------------------------------------------------------
    def sources(self) -> list[Source]:
        try:
            data = json.loads(self.sources_file.read_text())
        except FileNotFoundError:
            return []
        except ValueError as exc:
            raise ValidationError(f"{self.sources_file}: not JSON: {exc}") from None
        if not isinstance(data, list):
            raise ValidationError(f"{self.sources_file}: expected a list of sources")
        sources = [Source.from_dict(item, f"{self.sources_file}[{i}]") for i, item in enumerate(data)]
        if len({s.id for s in sources}) != len(sources):
            raise ValidationError(f"{self.sources_file}: duplicate source id", key="id")
        return sources

    def set_sources(self, sources: list[dict]) -> None:
        parsed = [Source.from_dict(item, f"source {i}") for i, item in enumerate(sources)]
        self.base.mkdir(parents=True, exist_ok=True)
        write_atomic(self.sources_file, json.dumps([s.__dict__ for s in parsed], indent=2) + "\n", 0o644)

    # indexes -----------------------------------------------------------
    def update(self, source_id: str | None = None) -> dict[str, int]:
        """Fetch the index of one source (or all); return the entry count per source updated."""
        sources = self.sources()
        if source_id is not None:
            sources = [s for s in sources if s.id == source_id]
            if not sources:
                raise NotFound(f"no template source {source_id!r}")
        self.index_dir.mkdir(parents=True, exist_ok=True)
        counts = {}
        for source in sources:
            staging = Path(tempfile.mkdtemp(prefix=f".{source.id}.", dir=self.index_dir))
            try:
                files, trusted, count = self._fetch(source)
                for fname, data in files.items():
                    (staging / fname).write_bytes(data)
                meta = {"id": source.id, "type": source.type, "url": source.url,
                        "trusted": trusted, "fetched": int(time.time())}
                (staging / "meta.json").write_text(json.dumps(meta))
                os.chmod(staging, 0o755)
                self._swap(staging, self.index_dir / source.id)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            counts[source.id] = count
        return counts

    def _fetch(self, source: Source) -> tuple[dict[str, bytes], bool, int]:
        check_url(source.url)
        if source.type == "aplinfo":
            return self._fetch_aplinfo(source)
        base = source.url if source.url.endswith("/") else source.url + "/"
        index_url = aplinfo.resolve_location(base, "streams/v1/index.json")
        index = fetch(index_url)
        images_url = aplinfo.resolve_location(base, simplestreams.products_path(index, source.id))
        images = fetch(images_url)
        entries = simplestreams.parse_images(images, base, source.id)
        return {"index.json": index, "images.json": images}, False, len(entries)

    def _fetch_aplinfo(self, source: Source) -> tuple[dict[str, bytes], bool, int]:
        """The index as the URL names it (``aplinfo.dat`` or ``aplinfo.dat.gz``), else the other form;
        with a keyring, its detached signature, checked as ``pveam`` does."""
        plain_url = source.url[:-3] if source.url.endswith(".gz") else source.url
        other = plain_url if source.url.endswith(".gz") else source.url + ".gz"
        raw, error = None, None
        for url in (source.url, other):
            try:
                raw = fetch(url)
                break
            except DownloadError as exc:
                error = error or exc
        if raw is None:
            assert error is not None
            raise error
        data = _gunzip(raw, source.id) if raw[:2] == b"\x1f\x8b" else raw
        entries = aplinfo.parse_aplinfo(_text(data, source.id), source.url, source.id)
        files = {"aplinfo.dat": data}
        if source.keyring:
            files["aplinfo.dat.sig"] = self._check_signature(source, plain_url, data, raw)
        return files, bool(source.keyring), len(entries)

    @staticmethod
    def _check_signature(source: Source, plain_url: str, data: bytes, raw: bytes) -> bytes:
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
                aplinfo.verify_signature(data, signature, Path(source.keyring or ""))
            except ValidationError:
                if raw is data:
                    raise
                aplinfo.verify_signature(raw, signature, Path(source.keyring or ""))  # over the .gz itself
            return signature
        raise ValidationError(f"source {source.id}: no signature at {plain_url}.asc, .gpg"
                              + (" or .gz.asc" if raw is not data else ""), key="signature")

    @staticmethod
    def _swap(staging: Path, target: Path) -> None:
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old.{os.getpid()}.{os.urandom(3).hex()}")
            os.rename(target, old)
        os.rename(staging, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def _cached(self, source: Source) -> list[Entry]:
        where = self.index_dir / source.id
        try:
            meta = json.loads((where / "meta.json").read_text())
            if meta.get("url") != source.url or meta.get("type") != source.type:
                return []  # the source changed since the last update
            if source.type == "aplinfo":
                return aplinfo.parse_aplinfo(_text((where / "aplinfo.dat").read_bytes(), source.id),
                                             source.url, source.id)
            base = source.url if source.url.endswith("/") else source.url + "/"
            return simplestreams.parse_images((where / "images.json").read_bytes(), base, source.id)
        except FileNotFoundError:
            return []

    def trusted(self, source_id: str) -> bool:
        try:
            return bool(json.loads((self.index_dir / source_id / "meta.json").read_text()).get("trusted"))
        except (FileNotFoundError, ValueError):
            return False

    def available(self, section: str | None = None) -> dict[str, list[Entry]]:
        """Entries of every cached index, grouped by section and sorted by name."""
        groups: dict[str, list[Entry]] = {}
        for source in self.sources():
            for entry in self._cached(source):
                if section is None or entry.section == section:
                    groups.setdefault(entry.section, []).append(entry)
        return {key: sorted(value, key=lambda e: e.name) for key, value in sorted(groups.items())}

    def find(self, name: str) -> Entry:
        check_template_name(name)
        for entries in self.available().values():
            for entry in entries:
                if entry.name == name:
                    return entry
        raise NotFound(f"no template {name!r} in the cached indexes (run 'update' first?)")

    # local cache -------------------------------------------------------
    def local(self) -> list[dict]:
        """Templates in the cache directory: name, path, size in bytes."""
        if not self.cache.is_dir():
            return []
        found = []
        for path in sorted(self.cache.iterdir()):
            if path.name.startswith(".") or not aplinfo.TEMPLATE_NAME.fullmatch(path.name):
                continue
            if path.is_file() and not path.is_symlink():
                found.append({"name": path.name, "path": str(path), "size": path.stat().st_size})
        return found

    def remove(self, name: str) -> None:
        path = self.cache / check_template_name(name)
        if not path.is_file() or path.is_symlink():
            raise NotFound(f"no template {name!r} in {self.cache}")
        path.unlink()


MAX_INDEX = 64 << 20


def _gunzip(raw: bytes, source_id: str) -> bytes:
    """A gzip-compressed index, refusing a corrupt one or one that expands beyond ``MAX_INDEX``."""
    decoder = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = decoder.decompress(raw, MAX_INDEX + 1)
        if len(data) > MAX_INDEX or decoder.unconsumed_tail:
            raise ValidationError(f"source {source_id}: the index expands beyond {MAX_INDEX} bytes")
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
