"""The storage driver interface: what every backend must do, and what it says it can do.

A *storage* is one entry of ``<root>/storage.cfg`` (Proxmox's ``storage.cfg``
syntax): an ID, a type and a path.  A *driver* handles one format of volume
on it.  Most storage types have one driver; a ``dir`` storage has two, as in
Proxmox: a directory (``subvol-<ID>-disk-<N>.subvol``) when no size is given,
and a raw ext4 image (``vm-<ID>-disk-<N>.raw``, loop-mounted) when one is.

Volume names are Proxmox's: ``<storage>:<ID>/<file>``; the part after the
colon (``<ID>/<file>``) is what drivers see.  Snapshots of a volume live
beside it as ``<file>@<snapshot>`` (Proxmox's btrfs naming).

Each driver declares its capabilities in :class:`Info`, in the spirit of
Incus's driver ``Info``: whether a snapshot copies data, whether a clone can
share data with a snapshot, whether the size is enforced, whether the volume
is a block device (a file system image mounted at start).  Backends such as
LVM-thin, ZFS or RBD fit the same interface: a driver whose ``activate``
returns the block device to mount, and whose snapshot and clone calls use the
backend's own.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import EngineError, HostError, NotFound, NotSupported, ValidationError

SNAPSHOT_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,39}$")
CONTENT_TYPES = ("rootdir", "images", "vztmpl", "iso", "backup", "snippets")


@dataclass(frozen=True)
class Info:
    """What a driver can do; the engine and the web tier read these instead of the driver's type."""

    name: str
    snapshots_instant: bool  # a snapshot copies no data (copy-on-write or a new layer)
    linked_clones: bool  # a clone from a snapshot can share its data instead of copying it
    clones_depend_on_snapshot: bool  # such a clone needs the snapshot to stay (it cannot be deleted)
    size_enforced: bool  # writes beyond the volume's size fail inside the container
    block_backed: bool  # the volume is a file system image, mounted at start
    mounted_at_start: bool  # the volume appears only through a mount made at start (image or overlay)
    online_resize: bool = True  # grows while the container runs
    backup_snapshots: bool = False  # offers a read-only snapshot for a backup of a running container


@dataclass(frozen=True)
class StorageDef:
    """One ``storage.cfg`` entry."""

    id: str
    type: str
    path: Path
    content: frozenset[str] = frozenset({"rootdir", "vztmpl", "backup"})
    nodes: tuple[str, ...] = ()
    disabled: bool = False
    options: dict[str, str] = field(default_factory=dict)


@dataclass
class Activation:
    """How a volume appears in the container: a mount made in its mount namespace at start.

    ``source``/``fstype``/``data`` are mount(2)'s; ``cwd`` is where relative paths in ``data``
    resolve (overlay layers); ``release`` is called once the mount exists or the start failed
    (it closes the loop device, which the kernel then frees with the mount's last user).
    """

    source: str
    fstype: str | None
    flags: int = 0
    data: str | None = None
    cwd: str | None = None
    release: Callable[[], None] | None = None

    def close(self) -> None:
        if self.release is not None:
            release, self.release = self.release, None
            release()


BACKUP_SNAPSHOT = ".vzdump"  # the snapshot a backup reads: not a valid user snapshot name, so never one of theirs
Fill = Callable[[Path], None]  # makes a new directory tree at the given path (which must not exist)


class Driver(ABC):
    """One volume format on one storage.  ``vol`` arguments are ``<ID>/<file>`` (no storage prefix)."""

    info: Info
    suffix: str  # the file name's end, e.g. ".subvol"
    prefix: str = "subvol"

    def __init__(self, storage: StorageDef):
        self.storage = storage
        self.images = storage.path / "images"

    # ---- names and paths -----------------------------------------------------------------
    def volname(self, ctid: int, disk: int) -> str:
        return f"{ctid}/{self.prefix}-{ctid}-disk-{disk}{self.suffix}"

    def owns(self, vol: str) -> bool:
        return vol.endswith(self.suffix)

    def path(self, vol: str) -> Path:
        """The host path of a volume (a directory, an image, or a volume's own directory)."""
        owner, _, leaf = vol.partition("/")
        if not owner.isdigit() or not leaf or "/" in leaf or leaf in (".", "..") or "@" in leaf:
            raise ValidationError(
                f"volume '{self.storage.id}:{vol}' is not a volume name of storage '{self.storage.id}'", key="rootfs"
            )
        return self.images / owner / leaf

    def snapshot_path(self, vol: str, snap: str) -> Path:
        check_snapshot_name(snap)
        path = self.path(vol)
        return path.with_name(f"{path.name}@{snap}")

    def owner_dir(self, ctid: int, owner: int) -> Path:
        """``images/<ID>``: mode 0700, owned by the container's root, so no other host user reaches inside."""
        directory = self.images / str(ctid)
        self.images.mkdir(mode=0o711, parents=True, exist_ok=True)
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            pass
        os.chown(directory, owner, owner)
        return directory

    # ---- what every driver does ------------------------------------------------------------
    @abstractmethod
    def create(
        self, ctid: int, disk: int, owner: int, size: int | None, fill: Fill | None, fill_key: str | None = None
    ) -> str:
        """Allocate a volume and fill it (``fill`` makes the tree; None leaves it empty, owned by ``owner``).

        ``fill_key`` names what ``fill`` makes (a template and its id map): a driver that shares
        read-only layers fills one per key and reuses it.

        On any failure nothing of the volume is left.  Returns ``<ID>/<file>``.
        """

    @abstractmethod
    def delete(self, vol: str) -> None:
        """Remove the volume and all its snapshots; a missing volume is not an error."""

    @abstractmethod
    def rootfs(self, vol: str) -> Path:
        """The directory the container's start enters: the tree itself, or the empty mount point."""

    def activate(self, vol: str) -> Activation | None:
        """The mount that makes the volume appear at ``rootfs(vol)`` (None: it is a plain directory)."""
        return None

    @abstractmethod
    def snapshot(self, vol: str, snap: str, running_root: int | None) -> None:
        """Keep the volume's content as ``snap``.  ``running_root`` is an fd of the running container's
        root (its file system frozen by the caller's cgroup freeze), or None if it is stopped."""

    def settle_snapshot(self, vol: str, snap: str) -> None:
        """After a running container's snapshot and its thaw, before the snapshot is committed: write out
        whatever the snapshot copied that is not on disk yet (nothing, for most drivers)."""
        return

    @abstractmethod
    def rollback(self, vol: str, snap: str) -> None:
        """Make the volume's content that of ``snap`` (the container is stopped)."""

    @abstractmethod
    def delete_snapshot(self, vol: str, snap: str) -> None:
        """Remove ``snap``; a missing one is not an error."""

    def has_snapshot(self, vol: str, snap: str) -> bool:
        return os.path.lexists(self.snapshot_path(vol, snap))

    def clone(
        self, vol: str, snap: str | None, ctid: int, disk: int, owner: int, linked: bool, size: int | None = None
    ) -> str:
        """A new volume on this storage from ``vol`` (or its snapshot), for container ``ctid``."""
        raise NotSupported(f"storage '{self.storage.id}' ({self.info.name}) cannot clone volumes in place")

    def linked_clones(self, vol: str, snap: str) -> list[int]:
        """Containers whose volumes need ``snap`` of ``vol`` to stay."""
        return []

    @abstractmethod
    def resize(self, vol: str, size: int, running_root: int | None) -> None:
        """Grow the volume to ``size`` bytes (the caller refused a shrink)."""

    def held_size(self, vol: str) -> int | None:
        """The size the storage holds the volume to now, read from the storage (not the config): how
        recovery learns what a killed resize did.  None where the driver enforces no size."""
        return None

    def copy_source(self, vol: str, snap: str | None) -> Path:
        """A directory holding the volume's (or snapshot's) tree, for a full copy.

        Drivers mounted at start mount it here; the caller runs this in a private mount
        namespace (:func:`engine.storage.mountns.run`), so nothing shows on the host.
        """
        return self.snapshot_path(vol, snap) if snap else self.rootfs(vol)

    @contextlib.contextmanager
    def writable_tree(self, vol: str) -> Iterator[Path]:
        """The volume's tree, writable by this process for the block, while the container is stopped
        (root's password and SSH keys at create time).

        A directory volume is its own tree; an image or overlay is mounted as the container would
        see it, in a helper's private mount namespace, reached through ``/proc/<helper>/root``.
        """
        if not self.info.mounted_at_start:
            yield self.rootfs(vol)
            return
        from engine.storage.mountns import holding

        with holding(self._mount_as_started, vol) as root:
            yield root

    def _mount_as_started(self, vol: str) -> Path:
        """Mount the volume read-write on its mount point as a start does; call in a private mount namespace."""
        from engine import syscalls as sc

        activation = self.activate(vol)
        try:
            if activation.cwd:
                os.chdir(activation.cwd)
            sc.mount(activation.source, str(self.rootfs(vol)), activation.fstype, activation.flags, activation.data)
        finally:
            activation.close()
        return self.rootfs(vol)

    # ---- backups ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def tree(self, vol: str) -> Iterator[Path]:
        """The volume's tree, readable by this process for the block (a backup of a stopped or frozen one).

        A directory volume is its own tree; an image or overlay is mounted read-only in a helper's
        private mount namespace and reached through ``/proc/<helper>/root``, so nothing shows on the host.
        """
        if not self.info.mounted_at_start:
            yield self.rootfs(vol)
            return
        from engine.storage.mountns import holding

        with holding(self.copy_source, vol, None) as root:
            yield root

    def backup_snapshot_path(self, vol: str) -> Path:
        path = self.path(vol)
        return path.with_name(f"{path.name}@{BACKUP_SNAPSHOT}")

    def check_backup_snapshot(self, vol: str) -> None:
        """NotSupported naming the storage when this volume cannot be snapshotted for a backup."""
        if not self.info.backup_snapshots:
            raise NotSupported(
                f"snapshot mode: storage '{self.storage.id}' ({self.info.name}) cannot take "
                "snapshots for a backup; use --mode suspend (frozen during the copy) or --mode stop"
            )

    def take_backup_snapshot(self, vol: str, running_root: int | None) -> None:
        """Keep the volume's content at this instant for a backup (the caller froze the container;
        ``running_root`` is an fd of the volume's root inside it, or None when it is stopped).

        Replaces what a killed backup may have left.
        """
        self.check_backup_snapshot(vol)
        raise NotSupported(f"storage '{self.storage.id}' ({self.info.name}) cannot take backup snapshots")

    @contextlib.contextmanager
    def backup_snapshot_tree(self, vol: str) -> Iterator[Path]:
        """The backup snapshot's tree, read-only, for the block (mounted privately when it must be)."""
        raise NotSupported(f"storage '{self.storage.id}' ({self.info.name}) cannot take backup snapshots")
        yield  # pragma: no cover

    def drop_backup_snapshot(self, vol: str) -> None:
        """Remove the backup snapshot; a missing one is not an error."""
        remove_path(self.backup_snapshot_path(vol))


def check_snapshot_name(name: str) -> str:
    """Proxmox's rules: a letter first, then letters, digits, '-' and '_', at most 40; 'current' is reserved."""
    if not isinstance(name, str) or not SNAPSHOT_RE.match(name):
        raise ValidationError(
            f"snapshot name '{name}' is invalid: it must start with a letter and hold only "
            "letters, digits, '-' and '_' (at most 40 characters)",
            key="snapname",
        )
    if name == "current":
        raise ValidationError("snapshot name 'current' is reserved (it names the live state)", key="snapname")
    return name


def run_tool(argv: list[str], what: str, input: bytes | None = None) -> str:
    """Run a host tool; its failure becomes a HostError naming what was attempted and the tool's message."""
    if shutil.which(argv[0]) is None:
        raise HostError(f"{what}: '{argv[0]}' is not installed on this node")
    import subprocess

    result = subprocess.run(argv, input=input, capture_output=True)
    if result.returncode != 0:
        message = (result.stderr or result.stdout).decode(errors="replace").strip().splitlines()
        raise HostError(f"{what}: {argv[0]} failed: {message[-1] if message else f'exit {result.returncode}'}")
    return result.stdout.decode(errors="replace")


def copy_tree_reflink(src: Path, dst: Path, what: str) -> None:
    """``cp -a --reflink=auto``: ownership, modes, xattrs, hard links and devices kept; shared
    extents where the file system can (btrfs, XFS), a full copy elsewhere."""
    if os.path.lexists(dst):
        raise EngineError(f"{what}: {dst} already exists")
    try:
        run_tool(["cp", "-a", "--reflink=auto", "--sparse=always", "--", str(src), str(dst)], what)
    except BaseException:
        remove_path(dst)
        raise


def move_tree_up(staging: Path, top: Path) -> None:
    """Move a tree made at ``top/<staging>`` to ``top`` itself (the root of a file system or subvolume),
    its root's owner and mode included."""
    for name in os.listdir(staging):
        dest = top / name
        if name == "lost+found" and dest.exists():
            remove_path(dest)
        os.rename(staging / name, dest)
    st = os.lstat(staging)
    os.chown(top, st.st_uid, st.st_gid)
    os.chmod(top, st.st_mode & 0o7777)
    os.rmdir(staging)


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=False, onerror=None)
    elif os.path.lexists(path):
        path.unlink()


def require(path: Path, what: str) -> Path:
    if not os.path.lexists(path):
        raise NotFound(f"{what}: {path} does not exist")
    return path
