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


@contextmanager
def container_lock(layout: Layout, ctid: int, timeout: float = 10.0) -> Iterator[None]:
    """Hold the container's flock; raise Locked naming the container if it stays busy."""
    path = layout.run / "lock" / f"{ctid}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise Locked(f"container {ctid} is busy with another operation (waited {timeout:g} s)") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        yield
    finally:
        os.close(fd)
