"""Fetch indexes and templates over HTTP(S), with resume, checksum and a per-name lock.

Only ``http`` and ``https`` URLs are fetched, and never from a host that
resolves to a link-local address (169.254.0.0/16, fe80::/10: cloud metadata
services live there). Redirects are checked the same way.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import http.client
import ipaddress
import mmap
import os
import queue
import re
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from engine import faults
from engine.errors import Cancelled, EngineError, HostError, ValidationError
from engine.templates.entry import Entry, check_template_name

TIMEOUT = 30.0
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class DownloadError(EngineError):
    """The server could not be reached, answered an error, or sent something else than announced."""


def check_url(url: str) -> str:
    """Refuse anything but http(s) to a host that does not resolve to a link-local address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(f"refusing URL {url!r}: only http:// and https:// are allowed", key="url")
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 80, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, ValueError) as exc:
        raise DownloadError(f"cannot resolve {parts.hostname}: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if address.is_link_local or getattr(address, "ipv4_mapped", None) and address.ipv4_mapped.is_link_local:
            raise ValidationError(f"refusing URL {url!r}: {parts.hostname} is a link-local address", key="url")
    return url


class _CheckedRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        check_url(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_CheckedRedirect)


def open_url(url: str, headers: dict[str, str] | None = None, timeout: float = TIMEOUT):
    """Open ``url`` after the checks above; HTTP errors other than 416 become DownloadError."""
    request = urllib.request.Request(check_url(url), headers={"User-Agent": "caisson", **(headers or {})})
    try:
        return _OPENER.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416:
            return exc
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"{url}: {getattr(exc, 'reason', exc)}") from None


def fetch(url: str, max_bytes: int = 64 << 20, timeout: float = TIMEOUT) -> bytes:
    """The whole body of ``url``, refusing one larger than ``max_bytes`` (indexes, signatures)."""
    with open_url(url, timeout=timeout) as response:
        if getattr(response, "code", 200) != 200:
            raise DownloadError(f"{url}: HTTP {response.code}")
        try:
            data = response.read(max_bytes + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise DownloadError(f"{url}: {exc}") from None
    if len(data) > max_bytes:
        raise DownloadError(f"{url}: larger than {max_bytes} bytes")
    return data


def _hash_file(path: Path, algo: str) -> hashlib._Hash:
    digest = hashlib.new(algo)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest


def _sync_file_range():
    """libc's sync_file_range(2), or None where it is missing (it only starts writeback early)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2
WRITEBACK_STEP = 8 << 20  # start writing back to the disk every 8 MiB, so the final fdatasync has little left


# One network read fills a buffer of this size (several recv calls, no copy). It bounds how long a slow
# link goes without a progress reading or a look at the cancel flag: 1 MiB, as the reads before the pool.
BUFFER = 1 << 20
BUFFERS = 16  # buffers in flight between the reader, the hasher and the writer
DIRECT_ALIGN = 4096  # O_DIRECT wants the memory, the file offset and the length aligned to the device's blocks


class _Sink:
    """Hashes and writes the received bytes in two threads beside the network reads.

    hashlib, os.write and the socket reads release the GIL on large buffers, so a sha512 (the
    slowest of the three here, 0.3 to 0.7 GB/s), the writes and the reads overlap instead of
    following one another. The reader fills a small pool of reusable page-aligned buffers with
    ``readinto`` (no allocation and no fresh page faults per chunk): a buffer goes to the hasher
    and the writer, and back to the pool once both are done with it, in order.

    The file is written with O_DIRECT where the filesystem takes it (``direct``): the disk reads
    the bytes straight from the buffer, without a copy into the page cache and without the kernel's
    writeback of 256 MiB of dirty pages later. Both cost CPU the sha512 needs on a small host, and the
    fdatasync before the rename (kept: it also flushes the size and the disk's cache) has nothing
    left to write. A length or an offset O_DIRECT cannot take (the last, short buffer; a resume at
    an odd offset) ends it for the rest of the file, which then goes through the page cache, whose
    writeback is started as the file grows (``sync_file_range``) so the final fdatasync waits only
    for the last few MiB.
    """

    def __init__(self, fd: int, digest, offset: int, direct: bool = False) -> None:
        self.fd, self.digest, self.written, self.synced = fd, digest, offset, offset
        self.direct = direct and offset % DIRECT_ALIGN == 0
        if direct and not self.direct:
            _set_direct(fd, False)
        self.error: BaseException | None = None
        self.free: queue.Queue[mmap.mmap] = queue.Queue()
        for _ in range(BUFFERS):
            self.free.put(mmap.mmap(-1, BUFFER))  # anonymous maps are page-aligned, as O_DIRECT needs
        self.to_hash: queue.Queue[memoryview | None] = queue.Queue()
        self.to_write: queue.Queue[memoryview | None] = queue.Queue()
        self.hashed: queue.Queue[bool] = queue.Queue()  # one token per buffer the hasher let go
        self.threads = [
            threading.Thread(target=self._hash, name="template-hash", daemon=True),
            threading.Thread(target=self._write, name="template-write", daemon=True),
        ]

    def _hash(self) -> None:
        while (view := self.to_hash.get()) is not None:
            self.digest.update(view)
            self.hashed.put(True)

    def _write(self) -> None:
        while (view := self.to_write.get()) is not None:
            if self.error is None:
                try:
                    self._write_out(view)
                except BaseException as exc:  # noqa: BLE001 - raised in the reading thread
                    self.error = exc
            self.hashed.get()  # the hasher is done with this buffer too (both go in order)
            self.free.put(view.obj)  # type: ignore[arg-type]

    def _write_out(self, view: memoryview) -> None:
        size = len(view)
        if self.direct and size % DIRECT_ALIGN:  # the file offset would no longer be aligned
            self._buffered()
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except OSError as exc:
                if not (self.direct and exc.errno == errno.EINVAL):
                    raise
                self._buffered()  # a filesystem that opened with O_DIRECT but refuses these writes
                continue
            if self.direct and len(view) % DIRECT_ALIGN:  # a short write left an odd offset
                self._buffered()
        self.written += size
        if not self.direct and _SYNC_FILE_RANGE is not None and self.written - self.synced >= WRITEBACK_STEP:
            _SYNC_FILE_RANGE(self.fd, self.synced, self.written - self.synced, _SYNC_FILE_RANGE_WRITE)
            self.synced = self.written

    def _buffered(self) -> None:
        _set_direct(self.fd, False)
        self.direct, self.synced = False, self.written

    def buffer(self) -> memoryview:
        """An empty buffer to read into (waits while all are in flight)."""
        if self.error is not None:
            raise self.error
        return memoryview(self.free.get())

    def put(self, view: memoryview) -> None:
        """Hand over the filled part of a buffer from :meth:`buffer`."""
        self.to_hash.put(view)
        self.to_write.put(view)

    def release(self, view: memoryview) -> None:
        """Give back a buffer that got no bytes."""
        self.free.put(view.obj)  # type: ignore[arg-type]

    def __enter__(self) -> _Sink:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.to_hash.put(None)
        self.to_write.put(None)
        for thread in self.threads:
            thread.join()

    def finish(self) -> None:
        """Wait for both threads; raise a write error; make the bytes durable (fdatasync)."""
        self.__exit__()
        if self.error is not None:
            raise self.error
        os.fdatasync(self.fd)


def _set_direct(fd: int, on: bool) -> None:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT if on else flags & ~os.O_DIRECT)


def _open_part(part: Path, flags: int) -> tuple[int, bool]:
    """The partial file, opened for O_DIRECT writes where its filesystem allows them (see _Sink)."""
    try:
        return os.open(part, flags | os.O_DIRECT, 0o600), True
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
    return os.open(part, flags, 0o600), False


def _attempt(entry: Entry, part: Path, digest_algo: str, progress, cancel, max_bytes, timeout):
    """One request: append to ``part`` (resuming with Range when it has bytes); return the digest."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    response = open_url(entry.location, headers, timeout)
    with response:
        status = getattr(response, "code", 200)
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "") or "")
        if offset and status == 206 and match and int(match.group(1)) == offset:
            total = int(match.group(3)) if match.group(3) != "*" else None
            digest = _hash_file(part, digest_algo)
            mode = "ab"
        elif status == 416 and offset:
            part.unlink()  # the partial is not a prefix the server knows; start over next time
            raise DownloadError(f"{entry.location}: server refused to resume at byte {offset}")
        elif status == 200:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            offset, digest, mode = 0, hashlib.new(digest_algo), "wb"
        else:
            raise DownloadError(f"{entry.location}: unexpected HTTP {status}")
        total = total or entry.size
        if max_bytes is not None and total is not None and total > max_bytes:
            raise ValidationError(f"{entry.name}: {total} bytes is over the limit of {max_bytes}", key="size")
        done = offset
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_APPEND if mode == "ab" else os.O_TRUNC)
        fd, direct = _open_part(part, flags)
        try:
            sink = _Sink(fd, digest, offset, direct)
            with sink:
                while True:
                    if cancel is not None and cancel.is_set():
                        raise Cancelled(f"download of {entry.name} cancelled; partial file kept for resume")
                    view = sink.buffer()
                    if max_bytes is not None:  # never read past the limit (+1 byte, to see that it is over)
                        view = view[: max(1, min(len(view), max_bytes + 1 - done))]
                    try:
                        count = response.readinto(view)
                    except (OSError, http.client.HTTPException) as exc:
                        sink.release(view)
                        raise DownloadError(f"{entry.location}: {exc or type(exc).__name__}") from None
                    if not count:
                        sink.release(view)
                        break
                    done += count
                    if max_bytes is not None and done > max_bytes:
                        sink.release(view)
                        raise ValidationError(f"{entry.name}: more than {max_bytes} bytes", key="size")
                    sink.put(view[:count])
                    faults.point("download:partial")
                    if progress is not None:
                        progress(done, total)
                sink.finish()
        finally:
            os.close(fd)
        if total is not None and done != total:
            raise DownloadError(f"{entry.location}: connection ended at byte {done} of {total}")
        return digest


def download(
    entry: Entry,
    dest_dir: Path,
    progress: Callable[[int, int | None], None] | None = None,
    cancel: threading.Event | None = None,
    max_bytes: int | None = None,
    retries: int = 3,
    timeout: float = TIMEOUT,
) -> Path:
    """Download ``entry`` into ``dest_dir`` and return the path of the verified template.

    Bytes go to ``<dest>/.<name>.part``; a partial file from an earlier try is
    resumed with an HTTP Range request (only if the server answers 206 with a
    matching Content-Range, else it restarts at 0), and a connection that
    breaks is retried ``retries`` times, each resuming where it stopped. The
    file is checked against the index's sha512/sha256/md5 and only then
    renamed to ``<dest>/<name>``, so the store never holds a partial or
    unverified template.

    What happens to the partial file on failure:

    * checksum mismatch or over ``max_bytes``: removed (the bytes are wrong);
    * cancelled (``cancel`` set, raises :class:`Cancelled`) or a network
      error/time-out (:class:`DownloadError`): kept, so the next call resumes.

    Concurrent downloads of the same name serialise on ``<dest>/.<name>.lock``
    (flock); the later one then finds the finished file and returns it.
    """
    name = check_template_name(entry.name)
    algo, expected = entry.checksum()
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final, part = dest_dir / name, dest_dir / f".{name}.part"
    lock_fd = os.open(dest_dir / f".{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        if final.exists():
            if _hash_file(final, algo).hexdigest() == expected:
                return final
            final.unlink()  # stale or corrupt copy: fetch it again
        for attempt in range(retries + 1):
            try:
                digest = _attempt(entry, part, algo, progress, cancel, max_bytes, timeout)
                break
            except DownloadError:
                if attempt == retries or (cancel is not None and cancel.is_set()):
                    raise
            except ValidationError:
                part.unlink(missing_ok=True)
                raise
            except OSError as exc:  # the destination's disk, not the network: a retry would not help
                part.unlink(missing_ok=True)
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise HostError(
                        f"{dest_dir}: no space left on the device for {name}; the partial download was removed"
                    ) from None
                raise HostError(f"{dest_dir}: writing {name} failed: {exc.strerror or exc}") from None
        if digest.hexdigest() != expected:
            part.unlink(missing_ok=True)
            raise ValidationError(
                f"{name}: {algo} checksum mismatch (got {digest.hexdigest()[:16]}..., "
                f"index says {expected[:16]}...); download removed",
                key="checksum",
            )
        os.chmod(part, 0o644)
        os.rename(part, final)
        dir_fd = os.open(dest_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return final
    finally:
        os.close(lock_fd)
