"""Backup files in a dump directory, named and marked the way Proxmox's vzdump does.

An archive is ``vzdump-lxc-<ID>-<YYYY_MM_DD-HH_MM_SS>.tar[.zst|.gz]`` (local
time).  Listed, as by Proxmox's storage layer (``archive_info``), are names of
that form with an ID of 100..999999999 and ``.tgz`` or ``.tar`` with an
optional ``.gz``, ``.lzo``, ``.zst`` or ``.bz2``; anything else (``.tar.xz``,
``.tgz.lzo``, ``.zip``) is not a backup. Beside it: ``vzdump-lxc-<ID>-<time>.log`` (the job's log),
``<archive>.notes`` (free text) and ``<archive>.protected`` (an empty
marker: a protected backup is never pruned), as Proxmox's directory storage
keeps them. Files still being written have a hidden temporary name and are
never listed.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.errors import InvalidState, NotFound, ValidationError

# The backup modes and compressions, in the order a form offers them (the first is the default).
MODES = ("snapshot", "suspend", "stop")
COMPRESSIONS = {"zstd": ".zst", "gzip": ".gz", "none": ""}
ARCHIVE_RE = re.compile(
    r"^(?P<stem>vzdump-lxc-(?P<ctid>[1-9][0-9]{2,8})-"
    r"(?P<time>\d{4}_\d{2}_\d{2}-\d{2}_\d{2}_\d{2}))"
    r"\.(?:tgz|tar(?:\.(?P<comp>gz|lzo|zst|bz2))?)$"
)
TIME_FORMAT = "%Y_%m_%d-%H_%M_%S"


def archive_name(ctid: int, when: float, compress: str) -> str:
    if compress not in COMPRESSIONS:
        raise ValidationError(f"compression '{compress}' is not one of {', '.join(COMPRESSIONS)}", key="compress")
    return f"vzdump-lxc-{ctid}-{time.strftime(TIME_FORMAT, time.localtime(when))}.tar{COMPRESSIONS[compress]}"


def stem(name: str) -> str:
    """``vzdump-lxc-100-2026_01_02-03_04_05``: what the archive and its log share."""
    match = ARCHIVE_RE.match(name)
    if not match:
        raise ValidationError(f"'{name}' is not a vzdump archive name (vzdump-lxc-ID-YYYY_MM_DD-HH_MM_SS.tar...)")
    return match.group("stem")


def log_path(archive: Path) -> Path:
    return archive.with_name(stem(archive.name) + ".log")


def notes_path(archive: Path) -> Path:
    return archive.with_name(archive.name + ".notes")


def protected_path(archive: Path) -> Path:
    return archive.with_name(archive.name + ".protected")


def free_name(dumpdir: Path, ctid: int, when: float, compress: str) -> tuple[str, float]:
    """An archive name (and its time) that no backup of ``ctid`` in ``dumpdir`` uses yet.

    Two backups within one second would share a name: the later one takes the next free second.
    """
    taken = {stem(p.name) for p in dumpdir.glob(f"vzdump-lxc-{ctid}-*") if ARCHIVE_RE.match(p.name)}
    when = float(int(when))
    while True:
        name = archive_name(ctid, when, compress)
        if stem(name) not in taken and not os.path.lexists(dumpdir / (stem(name) + ".log")):
            return name, when
        when += 1


@dataclass
class BackupFile:
    """One archive of a dump directory."""

    name: str
    path: str
    ctid: int
    time: float  # seconds since the epoch, from the name (local time)
    size: int
    compression: str
    protected: bool
    notes: str

    def as_dict(self) -> dict:
        return asdict(self)


def parse_archive(path: Path) -> BackupFile | None:
    """The backup a file is, or None if its name is not an lxc vzdump archive."""
    match = ARCHIVE_RE.match(path.name)
    if not match:
        return None
    year, month, day, hour, minute, second = (int(g) for g in re.findall(r"\d+", match.group("time")))
    try:
        when = time.mktime((year, month, day, hour, minute, second, 0, 0, -1))
        st = path.stat()
    except (OverflowError, ValueError, OSError):
        return None
    suffix = match.group("comp") or ("gz" if path.name.endswith(".tgz") else "")
    compression = {"zst": "zstd", "gz": "gzip", "": "none"}.get(suffix, suffix)
    try:
        notes = notes_path(path).read_text(errors="replace").strip()
    except OSError:
        notes = ""
    return BackupFile(
        path.name,
        str(path),
        int(match.group("ctid")),
        when,
        st.st_size,
        compression,
        protected_path(path).exists(),
        notes,
    )


def list_backups(dumpdir: Path, ctid: int | None = None) -> list[BackupFile]:
    """The dump directory's lxc archives (of one container if given), oldest first."""
    dumpdir = Path(dumpdir)
    if not dumpdir.is_dir():
        raise NotFound(f"dump directory {dumpdir} does not exist")
    found = []
    for entry in os.scandir(dumpdir):
        if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
            continue
        backup = parse_archive(Path(entry.path))
        if backup is not None and (ctid is None or backup.ctid == ctid):
            found.append(backup)
    return sorted(found, key=lambda b: (b.time, b.name))


def set_protected(archive: Path, protected: bool) -> None:
    marker = protected_path(archive)
    if protected:
        marker.touch()
    else:
        marker.unlink(missing_ok=True)


def remove_backup(archive: Path) -> None:
    """Delete an archive with its log and notes; a protected one is refused."""
    if protected_path(archive).exists():
        raise InvalidState(f"backup {archive.name} is protected; unprotect it first")
    archive.unlink()
    for extra in (notes_path(archive), log_path(archive)):
        extra.unlink(missing_ok=True)
