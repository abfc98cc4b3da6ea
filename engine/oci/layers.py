"""An OCI image's layers applied in order into a new rootfs, with the guarantees of template extraction.

Each layer goes through :class:`engine.unpack_writer.Writer` (every entry made relative to directory fds opened
``O_NOFOLLOW``, ids shifted into the container's map, no path leaving the root, nothing followed through
a symlink), extended here with the layer semantics of the OCI image spec:

* ``.wh.<name>`` removes ``<name>`` of the layers below; ``.wh..wh..opq`` empties its directory of what
  the layers below put there. A whiteout whose directory does not exist (or is a symlink) removes
  nothing, as in Proxmox; a whiteout of ``.`` removes its directory (never the root); a whiteout of
  ``..`` is refused as an escape attempt (Proxmox skips it).
* a later layer's file replaces a directory of a lower one (its tree goes) and the other way round.

Layers are applied in the order of the config's ``rootfs.diff_ids`` (as Proxmox does): each layer's
compressed bytes are checked against its digest and its uncompressed bytes against its diff id while it
is extracted. The work happens in a hidden sibling of the target renamed into place at the end, so a
refused or corrupt image leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

from engine.errors import UnsafeArchive, ValidationError
from engine.idmap import IdMap
from engine.oci.archive import Descriptor, OciArchive
from engine.unpack import member_entry
from engine.unpack_decode import open_archive
from engine.unpack_writer import CHUNK, Entry, ExtractStats, Writer, split_path, staging

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
MAX_MEMBERS = 2_000_000


class _LayerWriter(Writer):
    """A :class:`Writer` that keeps its tree across layers and applies whiteouts and replacements."""

    def __init__(self, root: Path, idmap: IdMap | None, source: str):
        super().__init__(root, idmap, source, "layer entry", None)
        self.layer_keys: set[str] = set()  # what the current layer made: its whiteouts never touch these
        self.whiteouts = 0

    def new_layer(self, name: str) -> None:
        self.layer_keys = set()
        self.noun = f"layer {name} entry"

    def add(self, e: Entry, data=None) -> None:
        try:
            parts = split_path(e.name) if e.name else []
        except ValueError as err:
            raise self.fail(e, str(err)) from None
        if parts and parts[-1].startswith(WHITEOUT):
            self.stats.members += 1
            if e.kind != "f":
                raise self.fail(e, "a whiteout must be a regular file")
            self._whiteout(e, parts)
            return
        key = "/".join(parts)
        if parts and self.kinds.get(key) == "d" and e.kind != "d":
            if key in self.layer_keys:
                raise self.fail(e, "would replace a directory of the same layer")
            self._remove(e, parts)  # a file of this layer replaces a directory of a lower one
        super().add(e, data)
        self.layer_keys.add(key)

    def _whiteout(self, e: Entry, parts: list[str]) -> None:
        name, parent = parts[-1], parts[:-1]
        if not self._reachable(parent):
            return  # nothing of a lower layer can be there
        if name == OPAQUE:
            prefix = "/".join(parent) + "/" if parent else ""
            children = [k for k in self.kinds if k.startswith(prefix) and k and "/" not in k[len(prefix) :]]
            for child in children:
                if child in self.kinds and child not in self.layer_keys:
                    self._remove(e, child.split("/"))
            self.whiteouts += 1
            return
        target = name[len(WHITEOUT) :]
        if target == "..":
            raise self.fail(e, "a whiteout of '..' would reach outside its directory")
        if not target or "/" in target:
            raise self.fail(e, "a whiteout must name an entry")
        victim = parent if target == "." else [*parent, target]
        if not victim:
            return  # the root itself is never removed
        key = "/".join(victim)
        if key in self.kinds and key not in self.layer_keys:
            self._remove(e, victim)
            self.whiteouts += 1

    def _reachable(self, parts: list[str]) -> bool:
        return all(self.kinds.get("/".join(parts[: i + 1])) == "d" for i in range(len(parts)))

    def _remove(self, e: Entry, parts: list[str]) -> None:
        """Remove an entry of a lower layer (a directory with its tree), through its parent's fd."""
        key = "/".join(parts)
        kind = self.kinds.pop(key)
        pfd = self._parent(e, parts)
        if kind == "d":
            below = key + "/"
            for k in [k for k in self._dirs if k == key or k.startswith(below)]:
                os.close(self._dirs.pop(k))
            for table in (self.kinds, self.pending):
                for k in [k for k in table if k.startswith(below)]:
                    del table[k]
            self.pending.pop(key, None)
            shutil.rmtree(parts[-1], dir_fd=pfd)  # fd-based: never follows a symlink inside
        elif kind not in ("s", "x"):  # skipped devices and excluded paths were never made
            os.unlink(parts[-1], dir_fd=pfd)


class _Reorder(Exception):
    def __init__(self, order: list[int]):
        self.order = order


def extract_image(
    archive: Path,
    target: Path,
    idmap: IdMap | None,
    *,
    arch: str = "amd64",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict, ExtractStats]:
    """Apply every layer of the OCI archive into the new directory ``target``; return the image config
    (the JSON object) and what was made. Raises UnsafeArchive for a dangerous entry, ValidationError for
    a digest mismatch or a malformed image; ``target`` then does not exist."""
    with OciArchive(archive, arch) as image:
        rootfs = image.config.get("rootfs") or {}
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list) or len(diff_ids) != len(image.layers):
            raise ValidationError(f"{archive}: the image config's rootfs.diff_ids do not match its layers")
        order = list(range(len(image.layers)))
        try:
            return image.config, _extract(image, target, idmap, order, diff_ids, progress)
        except _Reorder as wanted:  # the manifest lists the layers in another order than the config
            return image.config, _extract(image, target, idmap, wanted.order, diff_ids, progress)


def _extract(image: OciArchive, target: Path, idmap, order: list[int], diff_ids: list, progress) -> ExtractStats:
    total = sum(layer.size for layer in image.layers)
    done = 0
    with staging(Path(target)) as tmp:
        w = _LayerWriter(tmp, idmap, str(image.path))
        try:
            got = []
            for index in order:
                layer = image.layers[index]
                got.append(_apply(image, layer, w, lambda n, base=done: progress and progress(base + n, total)))
                done += layer.size
            if got != diff_ids:  # the k-th layer applied must be the k-th diff id
                if order == list(range(len(order))) and sorted(got) == sorted(diff_ids):
                    raise _Reorder([order[got.index(d)] for d in diff_ids])
                raise ValidationError(
                    f"{image.path}: the layers' uncompressed digests do not match the config's diff_ids", key="digest"
                )
            w.finish()
        finally:
            w.close()
    if progress is not None:
        progress(total, total)
    return w.stats


def _apply(image: OciArchive, layer: Descriptor, w: _LayerWriter, progress: Callable[[int], object]) -> str:
    """One layer through the writer; returns its uncompressed digest (its diff id)."""
    blob = image.blob(layer)
    diff = hashlib.sha256()
    w.new_layer(layer.digest[7:19])
    tar, data = open_archive(Path(f"{image.path}:{layer.digest}"), blob, prefetch=True, tap=diff.update)
    current = ""
    try:
        with tar:
            while (m := tar.next()) is not None:
                tar.members.clear()  # type: ignore[attr-defined]
                current = m.name
                if w.stats.members >= MAX_MEMBERS:
                    raise UnsafeArchive(f"{image.path}: image has more than {MAX_MEMBERS} entries")
                e = member_entry(m)
                if not e.kind:
                    raise w.fail(e, f"unsupported member type {m.type!r}")
                w.add(e, tar.extractfile(m) if e.kind == "f" else None)
                progress(data.consumed)  # type: ignore[attr-defined]
            while data.read(CHUNK):  # the tar's padding: part of the diff id
                pass
    except tarfile.TarError as err:
        where = f" at entry '{current}'" if current else ""
        raise ValidationError(f"{image.path}: layer {layer.digest} is corrupt or truncated{where}: {err}") from err
    finally:
        data.close()  # type: ignore[attr-defined]
    blob.verify()
    return f"sha256:{diff.hexdigest()}"
