"""Where the node keeps its state, per-container locks, and the record of running containers.

On-disk layout under the state root (``/var/lib/caisson`` by default), in
Proxmox's spirit::

    lxc/<ID>.conf                 one config file per container (pct syntax)
    images/<ID>/subvol-<ID>-disk-0.subvol/   the rootfs on the local directory storage
    storage.cfg                   the node's storages (absent: local only)
    template/cache/               template tarballs
    log/<ID>.console.log          what the container's init printed

and under the run directory (``/run/caisson``, cleared at boot as it should be)::

    <ID>.json                     init's pid and start time while it runs
    lock/<ID>.lock                flock per container

and ``intent/<ID>.json`` under the state root: what recovery needs to finish an
operation a killed process left under a persisted lock (see :class:`Intent`).

The run record is only a cache: the container's cgroup is the truth, and a
missing or stale record is rebuilt from it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from engine.config import write_atomic
from engine.errors import Locked

DEFAULT_ROOT = Path(os.environ.get("CAISSON_ROOT", "/var/lib/caisson"))
DEFAULT_RUN = Path(os.environ.get("CAISSON_RUN", "/run/caisson"))
DEFAULT_CGROUP_PARENT = os.environ.get("CAISSON_CGROUP_PARENT", "caisson")


@dataclass(frozen=True)
class Layout:
    root: Path
    run: Path

    @property
    def config_dir(self) -> Path:
        return self.root / "lxc"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def templates(self) -> Path:
        return self.root / "template" / "cache"

    @property
    def logs(self) -> Path:
        return self.root / "log"

    def config_path(self, ctid: int) -> Path:
        return self.config_dir / f"{ctid}.conf"

    def image_dir(self, ctid: int) -> Path:
        return self.images / str(ctid)

    def console_log(self, ctid: int) -> Path:
        return self.logs / f"{ctid}.console.log"

    def run_record(self, ctid: int) -> Path:
        return self.run / f"{ctid}.json"

    def ensure(self) -> None:
        """Make the directories; image and config dirs are not listable by other host users."""
        for path, mode in (
            (self.root, 0o711),
            (self.config_dir, 0o700),
            (self.images, 0o711),
            (self.root / "template", 0o755),
            (self.templates, 0o755),
            (self.logs, 0o700),
            (self.run, 0o711),
            (self.run / "lock", 0o700),
        ):
            path.mkdir(mode=mode, parents=True, exist_ok=True)


@dataclass(frozen=True)
class RunRecord:
    pid: int
    starttime: int
    init: str
    started_at: float

    @classmethod
    def load(cls, path: Path) -> RunRecord | None:
        try:
            data = json.loads(path.read_text())
            return cls(int(data["pid"]), int(data["starttime"]), str(data["init"]), float(data["started_at"]))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(self.__dict__), mode=0o600, durable=False)  # a cache, rebuilt from cgroups


class Intent:
    """What an operation under a persisted lock means to do, for recovery to finish it if the process dies.

    Proxmox's ``lock: rollback`` does not say which snapshot, nor whether the
    container ran: the rollback writes both here before it changes anything and
    removes the file when it ends (a failure it reports itself removes it too, so
    only a killed process leaves it).  Kept under the state root, not the run
    directory, since a host crash must not lose it while the lock stays.
    """

    def __init__(self, layout: Layout, ctid: int):
        self.path = layout.root / "intent" / f"{ctid}.json"

    def write(self, facts: dict) -> None:
        self.path.parent.mkdir(mode=0o700, exist_ok=True)
        write_atomic(self.path, json.dumps(facts), mode=0o600)

    def read(self) -> dict | None:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def flock_held(path: Path) -> bool:
    """Whether some process holds a flock on ``path`` now (False for a missing file): the kernel drops a dead
    holder's, so a lock file outlives its process without lying about it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def container_busy(layout: Layout, ctid: int) -> bool:
    """Whether a process holds the container's flock now: every operation holds it for its whole run, and the
    kernel drops it when the holder dies, so a persisted lock with the flock free was left by a dead process."""
    try:
        with container_lock(layout, ctid, timeout=0):
            return False
    except Locked:
        return True


@contextmanager
def container_lock(layout: Layout, ctid: int, timeout: float = 10.0, remove: bool = False) -> Iterator[None]:
    """Hold the container's flock; raise Locked naming the container if it stays busy.

    A flock belongs to an inode, not a name: a process that opened the lock file before a destroy unlinked
    it would get the flock on the deleted inode once the destroy ended, while another that opened the name
    after the unlink holds the new file's flock: two holders.  So a flock is only taken once the name still
    leads to the inode locked (else the file is opened again), and ``remove=True`` (destroy) unlinks the
    name while the flock is held, as the last thing before releasing it.
    """
    path = layout.run / "lock" / f"{ctid}.lock"
    deadline = time.monotonic() + timeout
    delay = 0.001
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise Locked(f"container {ctid} is busy with another operation (waited {timeout:g} s)") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
                continue
            if _same_file(fd, path):
                break
            # the flock of a name a destroy removed meanwhile: lock the file that has the name now
            os.close(fd)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except BaseException:
        os.close(fd)
        raise
    try:
        yield
        if remove:  # done: the name goes while the flock is still held
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)
