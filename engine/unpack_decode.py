"""The decompressed bytes of an archive, whatever its compression, decoded ahead in a thread.

Compression comes from magic bytes (suffixes lie); a decoder's complaint (bad data, a CRC, a
stream cut short) becomes ``tarfile.ReadError``, so callers report a corrupt archive rather than
a host failure.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import queue
import tarfile
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, cast

from .errors import EngineError, ValidationError
from .unpack_writer import CHUNK, Readable

TAR_BUFSIZE = 1 << 15  # tarfile's stream copies what is left of its buffer at every read: keep it small
_MAGIC = ((b"\x1f\x8b", "gz"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zst"), (b"BZh", "bz2"))


class _Info(tarfile.TarInfo):
    """Notes the end-of-archive block: without it tarfile ends a cut archive silently."""

    @classmethod
    def fromtarfile(cls, tf: tarfile.TarFile) -> _Info:
        try:
            return super().fromtarfile(tf)
        except tarfile.EOFHeaderError:  # type: ignore[attr-defined]  # a zero block
            tf.caisson_end_seen = True  # type: ignore[attr-defined]
            raise


class Decoded:
    """Decompressed archive bytes; a decoder's complaint (bad data, CRC, stream cut short)
    becomes tarfile.ReadError, so it is reported as a corrupt archive, not a host failure."""

    def __init__(self, f: Readable, errors: tuple[type[BaseException], ...], tap: Callable[[bytes], object] | None):
        self.f, self.errors, self.tap = f, errors, tap

    def read(self, n: int = -1) -> bytes:
        try:
            data = self.f.read(n)
            if self.tap is not None:
                self.tap(data)
            return data
        except self.errors as err:
            if isinstance(err, OSError) and err.errno is not None:  # a real I/O error
                raise
            raise tarfile.ReadError(str(err) or type(err).__name__) from err


class Prefetch:
    """Decompresses ahead in a thread: the decoders (zstd, zlib, lzma) and the file reads release
    the GIL, so decompression runs beside the extraction's system calls instead of between them.

    ``read`` hands out the chunks in order; an error of the thread is raised in the reader, at the
    point of the stream where it happened. ``close`` stops the thread (it is a daemon, bounded by
    a small queue, so an abandoned reader never keeps much memory)."""

    def __init__(self, f: Decoded, where: Callable[[], int], depth: int = 8):
        self.f, self.where = f, where
        self.chunks: queue.Queue[tuple[bytes, int] | BaseException] = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.buf, self.pos, self.eof = b"", 0, False
        self.consumed = 0  # the compressed file's offset at the end of the chunk being read
        self.thread = threading.Thread(target=self._run, name="unpack-decompress", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        item: tuple[bytes, int] | BaseException
        while not self.stop.is_set():
            try:
                item = (self.f.read(CHUNK), self.where())
            except BaseException as err:  # noqa: BLE001 - handed to the reading thread
                item = err
            while not self.stop.is_set():
                try:
                    self.chunks.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if not isinstance(item, tuple) or not item[0]:
                return

    def read(self, n: int = -1) -> bytes:
        if self.pos >= len(self.buf):
            if self.eof:
                return b""
            item = self.chunks.get()
            if isinstance(item, BaseException):
                self.eof = True
                raise item
            chunk, self.consumed = item
            if not chunk:
                self.eof = True
                return b""
            self.buf, self.pos = chunk, 0
        end = len(self.buf) if n < 0 else min(len(self.buf), self.pos + n)
        data = self.buf[self.pos : end] if (self.pos, end) != (0, len(self.buf)) else self.buf
        self.pos = end
        return data

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def open_archive(
    archive: Path, raw: BinaryIO, prefetch: bool = False, tap: Callable[[bytes], object] | None = None
) -> tuple[tarfile.TarFile, Decoded]:
    """A streaming tar reader over ``raw`` (the open file of ``archive``), whatever its compression.

    With ``prefetch`` the archive is decompressed ahead in a thread (:class:`Prefetch`); the caller
    then closes the returned stream when done, and reads how far the archive file was consumed from
    its ``consumed`` (``raw.tell()`` runs ahead by what the thread decompressed in advance).
    Returns the reader and the decompressed stream (read it to its end to check a final checksum).
    ``tap`` sees every decompressed chunk (an OCI layer's uncompressed digest is hashed there, in the
    prefetch thread). Members come in order, never the whole archive in memory. Compression comes from magic
    bytes (suffixes lie); the stdlib file readers check CRCs and cut-offs: a corrupt stream
    raises tarfile.ReadError, an unknown format ValidationError.
    """
    data, fmt = decoder(archive, raw, prefetch, tap)
    try:  # stream mode reads the first header already
        return tarfile.open(fileobj=cast(BinaryIO, data), mode="r|", tarinfo=_Info, bufsize=TAR_BUFSIZE), data
    except tarfile.TarError as err:
        if prefetch:
            data.close()  # type: ignore[attr-defined]
        detail = f"no data could be decompressed ({fmt})" if fmt != "tar" and str(err) == "empty file" else err
        raise ValidationError(f"{archive}: corrupt or truncated archive: {detail}") from err


def decoder(archive: Path, raw: BinaryIO, prefetch: bool, tap: Callable[[bytes], object] | None) -> tuple[Decoded, str]:
    """The decompressed bytes of ``raw`` and the compression, told by magic bytes (see open_archive)."""
    seekable = raw.seekable()  # a pipe (a migration's stream) is not
    if seekable:
        head = raw.read(512)
        raw.seek(0)
    else:  # a pipe (a migration's stream): look without consuming
        head = raw.peek(512)[:512]  # type: ignore[attr-defined]
    fmt = next((f for magic, f in _MAGIC if head.startswith(magic)), "tar" if head[257:262] == b"ustar" else "")
    errors: tuple[type[BaseException], ...] = (EOFError, OSError, zlib.error, lzma.LZMAError)
    f: Readable
    if fmt == "gz":
        f = gzip.GzipFile(fileobj=raw, mode="rb")
    elif fmt == "xz":
        f = lzma.LZMAFile(raw)  # noqa: SIM115 - these wrappers never close raw
    elif fmt == "bz2":
        f = bz2.BZ2File(raw)
    elif fmt == "zst":
        try:
            import zstandard
        except ImportError:
            raise EngineError("zstd archives need the 'zstandard' Python package") from None
        f = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=False)
        errors += (zstandard.ZstdError,)
    elif fmt == "tar":
        f = raw
    else:
        raise ValidationError(f"{archive}: unknown archive format (not a tar, tar.gz, tar.xz or tar.zst)")
    data: Decoded = Decoded(f, errors, tap)
    if prefetch:
        data = cast(Decoded, Prefetch(data, raw.tell if seekable else lambda: 0))
    return data, fmt
