"""Check a backup archive end to end without restoring it.

Every member is read and its data decompressed (so the compressor's checksums
and the tar headers' are all checked), the archive must end with tar's
end-of-archive marker and the compressed stream with its own end, no member
may leave the tree (absolute, ``..``), and the container config inside must
parse. The answer says how many members and bytes it holds.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.config import ContainerConfig
from engine.errors import NotFound, UnsafeArchive, ValidationError

from . import names
from .archive import CHUNK, CONFIG_MEMBER, member_name, open_reader
from .progress import CancelCheck, Progress, check


@dataclass
class VerifyResult:
    archive: str
    size: int  # the archive file's bytes
    members: int
    bytes: int  # file data inside, uncompressed
    hostname: str
    unprivileged: bool
    ctid: int | None

    def as_dict(self) -> dict:
        return asdict(self)


def verify(archive: Path | str, progress: Progress | None = None, cancel: CancelCheck | None = None) -> VerifyResult:
    archive = Path(archive)
    try:
        raw = open(archive, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as err:
        raise NotFound(f"archive {archive}: {err.strerror}") from err
    parsed = names.parse_archive(archive)
    ctid = parsed.ctid if parsed else None
    members = data_bytes = 0
    config_text: str | None = None
    current = ""
    with raw:
        total = os.fstat(raw.fileno()).st_size
        tar, stream = open_reader(archive, raw)
        try:
            with tar:
                while (member := tar.next()) is not None:
                    tar.members.clear()
                    check(cancel, "verify")
                    current = member.name
                    name = member_name(member.name)
                    parts = name.split("/")
                    if member.name.startswith("/") or ".." in parts:
                        raise UnsafeArchive(f"{archive}: member '{member.name}' would leave the tree", key=member.name)
                    if member.islnk() and (member.linkname.startswith("/") or ".." in member.linkname.split("/")):
                        raise UnsafeArchive(
                            f"{archive}: hard link '{member.name}' points outside the tree", key=member.name
                        )
                    members += 1
                    if member.isreg():
                        handle = tar.extractfile(member)
                        read, kept = 0, bytearray()
                        while handle is not None and (chunk := handle.read(CHUNK)):
                            read += len(chunk)
                            if name == CONFIG_MEMBER and len(kept) < 1 << 20:
                                kept += chunk
                        if read != member.size:
                            raise tarfile.ReadError(f"member '{member.name}' is cut short")
                        data_bytes += read
                        if name == CONFIG_MEMBER:
                            config_text = _text(bytes(kept), archive)
                    if progress is not None:
                        progress(raw.tell(), total)
                if not getattr(tar, "caisson_end_seen", False):
                    raise tarfile.ReadError("no end-of-archive marker")
                while stream.read(CHUNK):  # on to the compressed stream's end, so its checksum is checked
                    pass
        except tarfile.TarError as err:
            where = f" at member '{current}'" if current else ""
            raise ValidationError(f"{archive}: corrupt or truncated archive{where}: {err}") from err
    if config_text is None:
        raise ValidationError(
            f"{archive}: no container config ({CONFIG_MEMBER}): not a container backup", key="archive"
        )
    config = ContainerConfig.parse(ctid or 0, config_text, origin=f"{archive.name}:{CONFIG_MEMBER}")
    if progress is not None:
        progress(total, total)
    return VerifyResult(str(archive), total, members, data_bytes, config.hostname, config.unprivileged, ctid)


def _text(data: bytes, archive: Path) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise ValidationError(f"{archive}: {CONFIG_MEMBER} is not UTF-8 text", key="archive") from None
