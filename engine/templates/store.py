"""The template store: index sources, their cached indexes, and the local template cache.

Layout under the state root::

    template/sources.json         [{"id", "type", "url", "keyring"?, "enabled"?}]; "type" names a Source kind;
                                  without the file, the defaults (Proxmox, TurnKey, LXC image server)
    template/index/<id>/          the last good index of each source, plus meta.json
    template/status.json          per source: last attempt, last success, last error
    template/cache/               template tarballs (downloaded or built here)

An index is fetched and fully parsed (and its signature checked when the
source has a keyring) in a staging directory before it replaces the cached
one, so a failed or bad update leaves the old index in use. One source that
fails (unreachable, bad index) does not stop the others; its error is kept
in ``status.json`` beside the time it last succeeded.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from engine.config import write_atomic
from engine.errors import EngineError, NotFound, ValidationError
from engine.templates.download import check_url
from engine.templates.entry import TEMPLATE_NAME, Entry, check_template_name
from engine.templates.sources import DEFAULT_SOURCES, Source

# The largest index file the store fetches or expands.
MAX_INDEX = 64 << 20


class UpdateFailed(EngineError):
    """Some sources could not be updated; the others were. ``counts``: those that were."""

    def __init__(self, counts: dict[str, int], failed: dict[str, EngineError]):
        self.counts, self.failed = counts, failed
        super().__init__("; ".join(f"source {sid}: {exc}" for sid, exc in failed.items()))


class TemplateStore:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.base = self.root / "template"
        self.cache = self.base / "cache"
        self.index_dir = self.base / "index"
        self.sources_file = self.base / "sources.json"
        self.status_file = self.base / "status.json"

    # sources -----------------------------------------------------------
    def sources(self) -> list[Source]:
        try:
            data = json.loads(self.sources_file.read_text())
        except FileNotFoundError:
            data = DEFAULT_SOURCES
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
        if len({s.id for s in parsed}) != len(parsed):
            raise ValidationError("duplicate source id", key="id")
        self.base.mkdir(parents=True, exist_ok=True)
        write_atomic(self.sources_file, json.dumps([s.to_dict() for s in parsed], indent=2) + "\n", 0o644)

    # indexes -----------------------------------------------------------
    def update(self, source_id: str | None = None) -> dict[str, int]:
        """Fetch the index of one source (or of every enabled one); return the entry count per source.

        A named source that fails raises its error. Updating all, a failing source is recorded
        (:meth:`status`) and the others still updated; if any failed, an :class:`UpdateFailed` listing
        each by name is raised after the rest were done (its ``counts`` are those that succeeded)."""
        sources = self.sources()
        if source_id is not None:
            sources = [s for s in sources if s.id == source_id]
            if not sources:
                raise NotFound(f"no template source {source_id!r}")
        else:
            sources = [s for s in sources if s.enabled]
        self.index_dir.mkdir(parents=True, exist_ok=True)
        counts, failed = {}, {}
        for source in sources:
            try:
                counts[source.id] = self._update_one(source)
            except EngineError as exc:
                self._record(source.id, error=f"{exc}")
                if source_id is not None:
                    raise
                failed[source.id] = exc
        if failed:
            raise UpdateFailed(counts, failed)
        return counts

    def _update_one(self, source: Source) -> int:
        staging = Path(tempfile.mkdtemp(prefix=f".{source.id}.", dir=self.index_dir))
        try:
            check_url(source.url)
            index = source.fetch(MAX_INDEX)
            for fname, data in index.files.items():
                (staging / fname).write_bytes(data)
            meta = {
                "id": source.id,
                "type": source.type,
                "url": source.url,
                "trusted": index.trusted,
                "fetched": int(time.time()),
            }
            (staging / "meta.json").write_text(json.dumps(meta))
            os.chmod(staging, 0o755)
            self._swap(staging, self.index_dir / source.id)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._record(source.id, count=len(index.entries))
        return len(index.entries)

    def status(self) -> dict[str, dict]:
        """Per source id: ``attempt`` and ``success`` (Unix times, None if never), ``error`` (the last
        attempt's, None if it succeeded), ``count`` (templates at the last success)."""
        try:
            data = json.loads(self.status_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _record(self, source_id: str, error: str | None = None, count: int | None = None) -> None:
        status = self.status()
        now = int(time.time())
        row = status.get(source_id) or {"success": None, "count": None}
        row.update(attempt=now, error=error)
        if error is None:
            row.update(success=now, count=count)
        status[source_id] = row
        self.base.mkdir(parents=True, exist_ok=True)
        write_atomic(self.status_file, json.dumps(status, indent=1) + "\n", 0o644)

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
            return source.entries(self._reader(source))
        except FileNotFoundError:
            return []

    def news(self) -> list:
        """The news records of the cached indexes (Proxmox's ``pve-web-news``), per enabled source."""
        found = []
        for source in self.sources():
            if source.enabled and self._cached(source):
                found += source.news(self._reader(source))
        return found

    def _reader(self, source: Source):
        """``read(name)`` for the files of a source's cached index."""
        where = self.index_dir / source.id
        return lambda name: (where / name).read_bytes()

    def trusted(self, source_id: str) -> bool:
        try:
            return bool(json.loads((self.index_dir / source_id / "meta.json").read_text()).get("trusted"))
        except (FileNotFoundError, ValueError):
            return False

    def available(self, section: str | None = None) -> dict[str, list[Entry]]:
        """Entries of every cached index, grouped by section and sorted by name."""
        groups: dict[str, list[Entry]] = {}
        for source in self.sources():
            for entry in self._cached(source) if source.enabled else ():
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
