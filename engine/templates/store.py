"""The template store: index sources, their cached indexes, and the local template cache.

Layout under the state root::

    template/sources.json         [{"id", "type", "url", "keyring"?}]; "type" names a Source kind
    template/index/<id>/          the last good index of each source, plus meta.json
    template/cache/               template tarballs (downloaded or built here)

An index is fetched and fully parsed (and its signature checked when the
source has a keyring) in a staging directory before it replaces the cached
one, so a failed or bad update leaves the old index in use.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from engine.config import write_atomic
from engine.errors import NotFound, ValidationError
from engine.templates.download import check_url
from engine.templates.entry import TEMPLATE_NAME, Entry, check_template_name
from engine.templates.sources import Source

# The largest index file the store fetches or expands.
MAX_INDEX = 64 << 20


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
        write_atomic(self.sources_file, json.dumps([s.to_dict() for s in parsed], indent=2) + "\n", 0o644)

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
                check_url(source.url)
                index = source.fetch(MAX_INDEX)
                for fname, data in index.files.items():
                    (staging / fname).write_bytes(data)
                meta = {"id": source.id, "type": source.type, "url": source.url,
                        "trusted": index.trusted, "fetched": int(time.time())}
                (staging / "meta.json").write_text(json.dumps(meta))
                os.chmod(staging, 0o755)
                self._swap(staging, self.index_dir / source.id)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            counts[source.id] = len(index.entries)
        return counts

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
            return source.entries(lambda name: (where / name).read_bytes())
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
            if path.name.startswith(".") or not TEMPLATE_NAME.fullmatch(path.name):
                continue
            if path.is_file() and not path.is_symlink():
                found.append({"name": path.name, "path": str(path), "size": path.stat().st_size})
        return found

    def remove(self, name: str) -> None:
        path = self.cache / check_template_name(name)
        if not path.is_file() or path.is_symlink():
            raise NotFound(f"no template {name!r} in {self.cache}")
        path.unlink()

