"""Reading an OCI archive: the tar of an OCI image layout that ``skopeo copy ... oci-archive:`` writes
and Proxmox VE keeps in its template store (``<storage>/template/cache/<name>.tar``).

The archive is read in place: its tar index gives each blob's offset, and a blob is read as a slice of
the file (no copy). Every blob is checked against its digest: the small JSON ones (index, manifest,
config) when read, a layer while it is streamed through the extraction (:class:`Blob`), so a digest
mismatch is found at the latest at the end of that layer and the caller throws its work away.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from engine.errors import NotFound, ValidationError

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
LAYER_TYPES = (
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
)
_DIGEST = re.compile(r"^(sha256|sha512):([0-9a-f]{64}|[0-9a-f]{128})$")
MAX_JSON = 4 << 20
GOARCH = {"amd64": "amd64", "i386": "386", "arm64": "arm64", "armhf": "arm", "riscv64": "riscv64"}


def is_oci_archive(path: Path) -> bool:
    """Proxmox's test: a ``.tar`` holding ``oci-layout``, ``index.json`` and ``blobs/``."""
    path = Path(path)
    if path.suffix != ".tar" or not path.is_file():
        return False
    seen = set()
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                seen.add("blobs" if name.startswith("blobs/") else name)
                if {"oci-layout", "index.json", "blobs"} <= seen:
                    return True
    except (tarfile.TarError, OSError):
        return False
    return False


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    @classmethod
    def of(cls, data: object, where: str) -> Descriptor:
        if not isinstance(data, dict):
            raise ValidationError(f"{where}: a descriptor must be an object")
        digest, size = data.get("digest"), data.get("size")
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            raise ValidationError(f"{where}: bad digest {digest!r}")
        if not isinstance(size, int) or size < 0:
            raise ValidationError(f"{where}: bad size {size!r}")
        return cls(str(data.get("mediaType") or ""), digest, size)


class Blob:
    """A blob's bytes, read from the archive file and hashed as they are read; :meth:`verify` at the end."""

    def __init__(self, fd: int, offset: int, desc: Descriptor, source: str):
        self.fd, self.start, self.desc, self.source = fd, offset, desc, source
        self.pos = 0
        algo = desc.digest.partition(":")[0]
        self.hash = hashlib.new(algo)

    def read(self, n: int = -1) -> bytes:
        left = self.desc.size - self.pos
        n = left if n < 0 else min(n, left)
        if n <= 0:
            return b""
        data = os.pread(self.fd, n, self.start + self.pos)
        if not data:
            raise ValidationError(f"{self.source}: blob {self.desc.digest} is cut short")
        self.pos += len(data)
        self.hash.update(data)
        return data

    # open_archive() sniffs the first bytes and rewinds: only a rewind to the start is ever asked for
    def seek(self, offset: int, whence: int = 0) -> int:
        if (offset, whence) != (0, 0):
            raise OSError("a blob only rewinds to its start")
        self.pos = 0
        self.hash = hashlib.new(self.desc.digest.partition(":")[0])
        return 0

    def tell(self) -> int:
        return self.pos

    def seekable(self) -> bool:
        return True  # to its start, all open_archive asks

    def verify(self) -> None:
        while self.read(1 << 20):  # what the decompressor left (padding)
            pass
        got = f"{self.hash.name}:{self.hash.hexdigest()}"
        if got != self.desc.digest:
            raise ValidationError(
                f"{self.source}: digest mismatch for blob {self.desc.digest} (its bytes hash to {got})", key="digest"
            )


class OciArchive:
    """An open OCI archive: its blobs by digest, the chosen manifest, the image config."""

    def __init__(self, path: Path, arch: str = "amd64"):
        self.path = Path(path)
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as err:
            raise NotFound(f"OCI archive {self.path}: {err.strerror}") from err
        try:
            self.blobs = self._index_blobs()
            self.manifest = self._manifest(arch)
            self.config_desc = Descriptor.of(self.manifest.get("config"), f"{self.path}: manifest config")
            self.config = self.json(self.config_desc)
            layers = self.manifest.get("layers")
            if not isinstance(layers, list):
                raise ValidationError(f"{self.path}: the manifest lists no layers")
            self.layers = [Descriptor.of(d, f"{self.path}: layer {i}") for i, d in enumerate(layers)]
            for layer in self.layers:
                if layer.media_type not in LAYER_TYPES:
                    raise ValidationError(f"{self.path}: layer {layer.digest}: unsupported type {layer.media_type!r}")
        except BaseException:
            os.close(self.fd)
            raise

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> OciArchive:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _index_blobs(self) -> dict[str, tuple[int, int]]:
        found: dict[str, tuple[int, int]] = {}
        try:
            with tarfile.open(self.path, "r:") as tar:
                for m in tar:
                    name = m.name.removeprefix("./")
                    if m.isreg() and (name in ("index.json", "oci-layout") or name.startswith("blobs/")):
                        found[name] = (m.offset_data, m.size)
        except tarfile.TarError as err:
            raise ValidationError(f"{self.path}: not an OCI archive (a plain tar is expected): {err}") from err
        if "index.json" not in found or "oci-layout" not in found:
            raise ValidationError(f"{self.path}: not an OCI archive (no oci-layout or index.json)")
        return found

    def _read(self, name: str, limit: int = MAX_JSON) -> bytes:
        offset, size = self.blobs[name]
        if size > limit:
            raise ValidationError(f"{self.path}: {name} is larger than {limit} bytes")
        return os.pread(self.fd, size, offset)

    def blob(self, desc: Descriptor) -> Blob:
        algo, _, hexdigest = desc.digest.partition(":")
        name = f"blobs/{algo}/{hexdigest}"
        if name not in self.blobs:
            raise ValidationError(f"{self.path}: blob {desc.digest} is missing")
        offset, size = self.blobs[name]
        if size != desc.size:
            raise ValidationError(f"{self.path}: blob {desc.digest} has {size} bytes, its descriptor says {desc.size}")
        return Blob(self.fd, offset, desc, str(self.path))

    def json(self, desc: Descriptor) -> dict:
        if desc.size > MAX_JSON:
            raise ValidationError(f"{self.path}: {desc.digest} is larger than {MAX_JSON} bytes")
        blob = self.blob(desc)
        data = blob.read()
        blob.verify()
        return _parse(data, f"{self.path}: {desc.digest}")

    def _manifest(self, arch: str) -> dict:
        index = _parse(self._read("index.json"), f"{self.path}: index.json")
        for _ in range(4):  # an index may name an index (multi-platform)
            manifests = index.get("manifests")
            if not isinstance(manifests, list) or not manifests:
                raise ValidationError(f"{self.path}: the image index lists no manifest")
            descs = [(Descriptor.of(d, f"{self.path}: index"), d) for d in manifests]
            chosen = _for_platform(descs, GOARCH.get(arch, arch))
            if chosen is None:
                raise ValidationError(f"{self.path}: no image for linux/{GOARCH.get(arch, arch)} in the archive")
            data = self.json(chosen)
            if chosen.media_type in (INDEX, DOCKER_LIST) or "manifests" in data:
                index = data
                continue
            return data
        raise ValidationError(f"{self.path}: image indexes nest too deep")


def _for_platform(descs: list[tuple[Descriptor, dict]], goarch: str) -> Descriptor | None:
    if len(descs) == 1:
        return descs[0][0]
    for desc, raw in descs:
        platform = raw.get("platform") or {}
        if platform.get("os", "linux") == "linux" and platform.get("architecture") == goarch:
            return desc
    return None


def _parse(data: bytes, where: str) -> dict:
    try:
        value = json.loads(data)
    except ValueError as err:
        raise ValidationError(f"{where}: not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise ValidationError(f"{where}: a JSON object is expected")
    return value
