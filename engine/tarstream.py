"""A streaming tar reader for extraction: headers parsed straight from the decompressed chunks.

Python's ``tarfile`` in stream mode copies every header and every file's bytes through buffers of
its own and builds a ``TarInfo`` with a dozen fields per member; on a rootfs of tens of thousands of
small files that is most of an extraction's CPU time. This reader parses the same formats (ustar,
GNU with long names and old-style sparse files, POSIX pax with its per-member and global headers,
xattrs and GNU sparse 0.0/0.1/1.0 maps) and hands a member's bytes out as ``memoryview`` slices of the
decompressed chunks, never copied. It only reads: every safety rule stays with the caller
(``engine.unpack``), which sees the same names, types, ids, modes and link targets that
``tarfile`` would give it.

Errors are ``tarfile.ReadError`` (a bad header checksum, a number that is not one, a stream that
ends inside a member), as ``tarfile`` raises them.
"""

from __future__ import annotations

import re
import struct
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

BLOCK = 512
MAX_HEADER = 16 << 20  # a long name or a pax header larger than this is no honest archive's
REGULAR = frozenset(b"0\x007S")  # regular, old regular, contiguous, GNU sparse: all carry a file's bytes
KNOWN = frozenset(b"0123456\x007LKSxXg")
_ZEROS = memoryview(bytes(1 << 20))
_PAX_RECORD = re.compile(rb"(\d+) ([^=]+)=")
_PAX_INT = ("size", "uid", "gid", "GNU.sparse.size", "GNU.sparse.realsize")
_XATTR = "SCHILY.xattr."
_END = bytes(BLOCK)
# name mode uid gid size mtime chksum type linkname magic+version (uname gname skipped) devmajor devminor prefix
_HEADER = struct.Struct("100s8s8s8s12s12s8sB100s8s64x8s8s155s")


def _str(field_: bytes) -> str:
    """A NUL-terminated text field."""
    return field_.partition(b"\0")[0].decode("utf-8", "surrogateescape")


def _oct(field_: bytes) -> int:
    """``_num`` of a plain octal field (digits, then NULs or spaces) in one step, else ``_num``.

    When ``int`` takes what is left after the trailing NULs and spaces, no NUL is left inside, so it
    reads the same digits ``_num`` would read before its first NUL."""
    try:
        return int(field_.rstrip(b"\0 ") or b"0", 8)
    except ValueError:
        return _num(field_)


def _num(field_: bytes) -> int:
    """An octal number, or GNU's base-256 for big values (first byte 0x80 or 0xff)."""
    if field_[:1] in (b"\x80", b"\xff"):
        value = int.from_bytes(field_[1:], "big")
        return value - (256 ** (len(field_) - 1)) if field_[0] == 0xFF else value
    end = field_.find(b"\0")
    text = (field_ if end < 0 else field_[:end]).strip()
    try:
        return int(text or b"0", 8)
    except ValueError:
        raise tarfile.ReadError(f"invalid header: {bytes(field_)!r} is not a number") from None


@dataclass
class Member:
    """One member, as ``tarfile`` would describe it (``type`` is the one-byte type flag)."""

    name: str
    type: int
    mode: int
    uid: int
    gid: int
    size: int  # the file's length (for a sparse file: with its holes)
    mtime_ns: int
    linkname: str
    devmajor: int
    devminor: int
    xattrs: dict[str, bytes] = field(default_factory=dict)
    stored: int = 0  # bytes of data in the archive
    sparse: list[tuple[int, int]] | None = None  # (offset, length) of the data regions

    def isreg(self) -> bool:
        return self.type in REGULAR


class TarStream:
    """Members of a tar stream, in order; ``read`` gives decompressed chunks (b"" at the end)."""

    def __init__(self, read: Callable[[int], bytes], chunk: int = 1 << 20):
        self._read, self._chunk = read, chunk
        self.buf: bytes = b""
        self.view = memoryview(self.buf)
        self.pos = 0
        self.left = 0  # bytes of the current member's data (and its padding) not read yet
        self.end_seen = False  # the zero block that ends an archive
        self.globals: dict[str, bytes] = {}

    # ---- bytes ---------------------------------------------------------------------------------
    def _more(self) -> bool:
        chunk = self._read(self._chunk)
        if not chunk:
            return False
        self.buf, self.view, self.pos = chunk, memoryview(chunk), 0
        return True

    def _take(self, n: int) -> bytes:
        """The next n bytes, joined across chunks when they straddle two."""
        if self.pos + n <= len(self.buf):
            self.pos += n
            return self.buf[self.pos - n : self.pos]
        parts = [self.buf[self.pos :]]
        got = len(parts[0])
        self.pos = len(self.buf)
        while got < n:
            if not self._more():
                raise tarfile.ReadError("unexpected end of data")
            piece = self.buf[: n - got]
            self.pos = len(piece)
            parts.append(piece)
            got += len(piece)
        return b"".join(parts)

    def _pieces(self, n: int) -> Iterator[memoryview]:
        """The next n bytes as slices of the chunks, without copying."""
        while n:
            if self.pos >= len(self.buf) and not self._more():
                raise tarfile.ReadError("unexpected end of data")
            take = min(n, len(self.buf) - self.pos)
            self.pos += take
            n -= take
            yield self.view[self.pos - take : self.pos]

    def _skip(self, n: int) -> None:
        if self.pos + n <= len(self.buf):  # most often a file's padding, inside the current chunk
            self.pos += n
            return
        for _ in self._pieces(n):
            pass

    def data(self, member: Member, size: int) -> Iterator[memoryview]:
        """A regular member's bytes, at most ``size`` at a time; a sparse file's holes come as zeros."""
        n = member.size
        if member.sparse is None and n <= size and self.pos + n <= len(self.buf):  # most files: one slice
            self.pos += n
            self.left -= n
            if n:
                yield self.view[self.pos - n : self.pos]
            return
        regions = member.sparse if member.sparse is not None else [(0, member.size)]
        at = 0
        for offset, length in regions:
            while at < offset:  # a hole
                step = min(size, offset - at, len(_ZEROS))
                at += step
                yield _ZEROS[:step]
            for piece in self._pieces(length):
                self.left -= len(piece)
                while piece:
                    yield piece[:size]
                    piece = piece[size:]
            at += length
        while at < member.size:
            step = min(size, member.size - at, len(_ZEROS))
            at += step
            yield _ZEROS[:step]

    # ---- headers -------------------------------------------------------------------------------
    def next(self) -> Member | None:
        """The next member (skipping what is left of the previous one's data), or None at the end."""
        if self.left:
            self._skip(self.left)
            self.left = 0
        pax: dict[str, bytes] = {}
        longname = longlink = None
        while True:
            if self.pos + BLOCK > len(self.buf) and self.pos == len(self.buf) and not self._more():
                return None  # the stream ends without an end block: the caller says so
            head = self._take(BLOCK)
            if head == _END:
                self.end_seen = True
                return None
            fields = _HEADER.unpack_from(head)
            chksum = _oct(fields[6])
            if chksum != 256 + sum(head) - sum(fields[6]) and chksum != _signed_sum(head):
                raise tarfile.ReadError("bad checksum")
            kind = fields[7]
            size = _oct(fields[4])
            if kind in b"LKxXg":
                if not 0 <= size <= MAX_HEADER:
                    raise tarfile.ReadError(f"invalid header: an extended header of {size} bytes")
                if kind in b"LK":  # GNU long name or link target for the next header
                    value = _str(self._take(_padded(size))[:size])
                    longname, longlink = (value, longlink) if kind == ord("L") else (longname, value)
                    continue
                records = _pax(self._take(_padded(size))[:size])
                if kind == ord("g"):
                    self.globals.update(records)
                else:
                    pax.update(records)
                continue
            if self.globals:
                pax = {**self.globals, **pax}
            return self._member(head, fields, kind, size, pax, longname, longlink)

    def _member(
        self, head: bytes, fields: tuple, kind: int, size: int, pax: dict[str, bytes], longname, longlink
    ) -> Member:
        name = longname if longname is not None else _str(fields[0])
        if fields[9][:6] == b"ustar\x00" and fields[12][:1] != b"\0" and kind not in b"LKS":
            name = f"{_str(fields[12])}/{name}"
        if kind == 0 and name.endswith("/"):
            kind = 53  # "5"
        device = kind in b"34"
        m = Member(
            name,
            kind,
            _oct(fields[1]),
            _oct(fields[2]),
            _oct(fields[3]),
            size,
            _oct(fields[5]) * 10**9,
            longlink if longlink is not None else _str(fields[8]),
            _oct(fields[10]) if device else 0,
            _oct(fields[11]) if device else 0,
        )
        if kind == ord("S"):
            self._gnu_sparse(m, head)
        if pax:
            self._apply_pax(m, pax)
        m.stored = size if kind == ord("S") else m.size
        if m.stored < 0:
            raise tarfile.ReadError("invalid header: negative size")
        if pax and ("GNU.sparse.major" in pax or "GNU.sparse.map" in pax):
            self._pax_sparse(m, pax)
        if m.type in REGULAR or m.type not in KNOWN:  # as tarfile: only these carry data
            self.left = _padded(m.stored)
            if pax and pax.get("GNU.sparse.major") == b"1":  # sparse 1.0: the map opens the data
                self._sparse_map_1(m)
        if m.sparse is not None:
            _check_regions(m)
        if m.type == 53:
            m.name = m.name.rstrip("/")
        return m

    def _gnu_sparse(self, m: Member, head: bytes) -> None:
        """Old GNU sparse: up to 4 regions in the header, 21 more in each extension block."""
        regions = _regions(head[386:482], 4)
        extended = head[482]
        m.size = _num(head[483:495])
        while extended:
            block = self._take(BLOCK)
            regions += _regions(block[:504], 21)
            extended = block[504]
        m.sparse = regions

    def _sparse_map_1(self, m: Member) -> None:
        """GNU sparse 1.0: decimal numbers, one a line (count, then offset/length pairs), padded."""
        numbers: list[int] = []
        text = b""
        used = 0
        while True:
            text += self._take(BLOCK)
            used += BLOCK
            lines = text.split(b"\n")
            if len(lines) > 1:
                count = int(lines[0]) if lines[0].isdigit() else -1
                if count < 0:
                    raise tarfile.ReadError("invalid GNU sparse map")
                if len(lines) - 1 >= 1 + 2 * count:
                    numbers = [int(x) for x in lines[1 : 1 + 2 * count]]
                    break
            if used > 1 << 20:
                raise tarfile.ReadError("invalid GNU sparse map")
        m.sparse = list(zip(numbers[0::2], numbers[1::2], strict=True))
        self.left -= used
        m.stored -= used

    def _apply_pax(self, m: Member, pax: dict[str, bytes]) -> None:
        if "path" in pax:
            m.name = pax["path"].decode("utf-8", "surrogateescape")
        if "linkpath" in pax:
            m.linkname = pax["linkpath"].decode("utf-8", "surrogateescape")
        for key in ("size", "uid", "gid"):
            if key in pax:
                setattr(m, key, _pax_int(pax[key]))
        if "mtime" in pax:
            m.mtime_ns = _pax_time_ns(pax["mtime"])
        m.xattrs = {k[len(_XATTR) :]: v for k, v in pax.items() if k.startswith(_XATTR)}

    def _pax_sparse(self, m: Member, pax: dict[str, bytes]) -> None:
        """GNU sparse files in pax form: 0.0 and 0.1 (the map in records), 1.0 (the map in the data)."""
        if "GNU.sparse.map" in pax:
            numbers = [_pax_int(x) for x in pax["GNU.sparse.map"].split(b",")]
            if len(numbers) % 2:
                raise tarfile.ReadError("invalid GNU sparse map")
            m.sparse = list(zip(numbers[0::2], numbers[1::2], strict=True))
        if "GNU.sparse.name" in pax:
            m.name = pax["GNU.sparse.name"].decode("utf-8", "surrogateescape")
        real = pax.get("GNU.sparse.realsize", pax.get("GNU.sparse.size"))
        if real is not None:
            m.size = _pax_int(real)


def _check_regions(m: Member) -> None:
    """A sparse map must describe the stored bytes exactly, in order, inside the file."""
    at = stored = 0
    for offset, length in m.sparse or ():
        if offset < at or length < 0:
            raise tarfile.ReadError("invalid GNU sparse map")
        at, stored = offset + length, stored + length
    if at > m.size or stored != m.stored:
        raise tarfile.ReadError("invalid GNU sparse map")


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _signed_sum(head: bytes) -> int:
    return 256 + sum(b - 256 if b > 127 else b for i, b in enumerate(head) if not 148 <= i < 156)


def _regions(area: bytes, count: int) -> list[tuple[int, int]]:
    regions = []
    for i in range(count):
        offset, length = area[i * 24 : i * 24 + 12], area[i * 24 + 12 : i * 24 + 24]
        if offset[:1] == b"\0":
            break
        regions.append((_num(offset), _num(length)))
    return regions


def _pax_time_ns(value: bytes) -> int:
    """A pax time ("1700000000.123456789", maybe negative) in exact nanoseconds; 0 if it is no number."""
    whole, _, frac = value.partition(b".")
    if not whole.lstrip(b"-").isdigit() or (frac and not frac.isdigit()):
        return 0
    ns = abs(int(whole)) * 10**9 + int((frac + b"000000000")[:9])
    return -ns if whole.startswith(b"-") else ns


def _pax_int(value: bytes) -> int:
    try:
        return int(value)
    except ValueError:
        return 0


def _pax(data: bytes) -> dict[str, bytes]:
    """The records of a pax header: ``"%d %s=%s\\n"``, the length counting the whole record."""
    records: dict[str, bytes] = {}
    sparse: list[bytes] = []  # sparse 0.0: repeated offset and numbytes records, in turn
    pos = 0
    while pos < len(data) and data[pos] != 0:
        match = _PAX_RECORD.match(data, pos)
        if match is None:
            raise tarfile.ReadError("invalid header: malformed pax record")
        length = int(match.group(1))
        end = pos + length
        if length < 1 or end > len(data) or data[end - 1 : end] != b"\n":
            raise tarfile.ReadError("invalid header: malformed pax record")
        key, value = match.group(2).decode("utf-8", "surrogateescape"), data[match.end() : end - 1]
        if key in ("GNU.sparse.offset", "GNU.sparse.numbytes"):
            sparse.append(value)
        records[key] = value
        pos = end
    if sparse:
        records["GNU.sparse.map"] = b",".join(sparse)
    return records
