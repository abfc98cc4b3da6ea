"""Pull an image into the template store as an OCI archive, as Proxmox VE does (``skopeo copy
docker://<ref> oci-archive:<store>/<name>.tar``), with progress, resume and a clean abandon.

skopeo copies into an OCI image layout directory ``<store>/.<name>.pull/`` rather than straight into the
archive: an interrupted pull keeps the blobs it has (skopeo's layout destination skips a blob that is
already there), so the next pull of the same name resumes, and the bytes landing in it give the
progress. Once skopeo is done (it checks every blob against its digest as it downloads it), the layout
is packed into ``.<name>.tar.part``, each blob hashed again as it is copied, and the archive is read
back (:class:`engine.oci.archive.OciArchive`: index, manifest and config present and matching) before
it is renamed to ``<name>.tar``. The store never holds a partial or unverified archive.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path

from engine.errors import AlreadyExists, Cancelled, ValidationError
from engine.oci import registry
from engine.oci.archive import OciArchive
from engine.oci.reference import Reference, archive_name, parse

Progress = Callable[[int, int | None], None]
POLL = 0.2


def pull(
    root: Path,
    cache: Path,
    reference: str,
    *,
    name: str | None = None,
    credentials: registry.Credentials | None = None,
    arch: str = "amd64",
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Pull ``reference`` into ``cache``; returns the archive's path. A name already in the store is
    refused (as Proxmox does). Cancelled keeps what was downloaded for a resume; :func:`abandon` drops it."""
    ref = parse(reference)
    final = cache / archive_name(ref, name)
    cache.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(cache / f".{final.name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        if final.exists():
            raise AlreadyExists(f"refusing to override existing file '{final.name}' in the template store")
        layout = _work(final)
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"pull of {ref} cancelled before it began")
        settings = registry.Settings.load(root)
        with registry.session(settings, ref, credentials) as skopeo:
            total = _size(ref, skopeo, arch)
            try:
                _copy(ref, layout, skopeo, arch, total, progress, cancel)
            except ValidationError:  # wrong bytes: nothing of them is worth keeping for a resume
                shutil.rmtree(layout, ignore_errors=True)
                raise
        part = final.with_name(f".{final.name}.part")
        try:
            _pack(layout, part)
        except ValidationError:
            shutil.rmtree(layout, ignore_errors=True)
            part.unlink(missing_ok=True)
            raise
        try:
            with OciArchive(part, arch):  # index -> manifest -> config, each checked against its digest
                pass
            os.chmod(part, 0o644)
            os.rename(part, final)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        shutil.rmtree(layout, ignore_errors=True)
        if progress is not None:
            progress(total or 0, total)
        return final
    finally:
        os.close(lock_fd)


def abandon(cache: Path, reference: str, name: str | None = None) -> bool:
    """Drop what an interrupted pull of this name kept; True if there was something."""
    final = cache / archive_name(parse(reference), name)
    found = False
    for leftover in (_work(final), final.with_name(f".{final.name}.part")):
        if leftover.is_dir():
            shutil.rmtree(leftover)
            found = True
        elif leftover.exists():
            leftover.unlink()
            found = True
    return found


def _work(final: Path) -> Path:
    return final.with_name(f".{final.name.removesuffix('.tar')}.pull")


def _platform(arch: str) -> list[str]:
    from engine.oci.archive import GOARCH

    return ["--override-os", "linux", "--override-arch", GOARCH.get(arch, arch)]


def _size(ref: Reference, skopeo: registry.Session, arch: str) -> int | None:
    """The image's compressed size for the progress, from its manifest (that of ``arch`` in a list)."""
    from engine.oci.archive import GOARCH

    try:
        manifest = json.loads(registry.run(skopeo.argv("inspect", "--raw", ref.transport), skopeo.env))
        if "manifests" in manifest:
            wanted = GOARCH.get(arch, arch)
            chosen = next(m for m in manifest["manifests"] if (m.get("platform") or {}).get("architecture") == wanted)
            digest_ref = f"docker://{ref.repo}@{chosen['digest']}"
            manifest = json.loads(registry.run(skopeo.argv("inspect", "--raw", digest_ref), skopeo.env))
        parts = [manifest.get("config") or {}, *(manifest.get("layers") or [])]
        return sum(int(p.get("size") or 0) for p in parts) or None
    except (ValueError, TypeError, AttributeError, KeyError, StopIteration):
        return None


def _copy(ref, layout: Path, skopeo: registry.Session, arch, total, progress, cancel) -> None:
    argv = skopeo.argv("copy", "--retry-times", "3", ref.transport, f"oci:{layout}:{ref.tag or 'latest'}", side="src-")
    argv[1:1] = _platform(arch)
    proc = subprocess.Popen(
        argv, env=skopeo.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    stderr = io.StringIO()
    reader = threading.Thread(target=lambda: stderr.write(proc.stderr.read().decode(errors="replace")), daemon=True)
    reader.start()
    try:
        while True:
            if cancel is not None and cancel.is_set():
                proc.terminate()
                proc.wait()
                raise Cancelled(f"pull of {ref} cancelled; what was downloaded is kept for a resume")
            if progress is not None:
                progress(_landed(layout), total)
            try:
                proc.wait(timeout=POLL)
                break
            except subprocess.TimeoutExpired:
                pass
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    finally:
        reader.join()
    if proc.returncode != 0:
        raise registry.error_of(stderr.getvalue(), "copy")


def _landed(layout: Path) -> int:
    """Bytes in the layout's blob directory (finished blobs and those being written)."""
    done = 0
    blobs = layout / "blobs" / "sha256"
    try:
        with os.scandir(blobs) as entries:
            for entry in entries:
                with_size = entry.stat(follow_symlinks=False)
                done += with_size.st_size
    except FileNotFoundError:
        pass
    return done


def _pack(layout: Path, part: Path) -> None:
    """The layout as an OCI archive (the tar skopeo's oci-archive transport writes), each blob hashed as it
    is copied: a blob whose bytes do not match its name is refused."""
    index = json.loads((layout / "index.json").read_text())
    with tarfile.open(part, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("oci-layout", "index.json"):
            tar.add(layout / name, arcname=name, recursive=False)
        for d in ("blobs", "blobs/sha256"):
            tar.add(layout / d, arcname=d, recursive=False)
        for entry in sorted(os.scandir(layout / "blobs" / "sha256"), key=lambda e: e.name):
            if not entry.is_file(follow_symlinks=False) or len(entry.name) != 64:
                continue  # skopeo's temporary files of an earlier, interrupted run
            info = tar.gettarinfo(entry.path, arcname=f"blobs/sha256/{entry.name}")
            with open(entry.path, "rb") as src:
                hashing = _Hashing(src)
                tar.addfile(info, hashing)
            if hashing.hash.hexdigest() != entry.name:
                raise ValidationError(f"blob sha256:{entry.name} does not match its digest", key="digest")
    if not index.get("manifests"):
        raise ValidationError("skopeo wrote an image layout without a manifest")


class _Hashing:
    def __init__(self, f):
        self.f, self.hash = f, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.hash.update(data)
        return data
