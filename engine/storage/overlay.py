"""Overlay volumes: shared read-only layers below, one writable upper layer per volume.

A template is unpacked once, as a layer under ``<path>/layers/t<hash>/``
(the hash covers the template file and the id map it was shifted with); every
container made from it mounts it as its lowest layer and writes only to its
own upper layer.  Creating a container therefore copies no template data.

``local-overlay:100/subvol-100-disk-0.overlay`` is the directory
``<path>/images/100/subvol-100-disk-0.overlay/`` holding ``lower`` (the layer
IDs, topmost first), ``upper/``, ``work/`` and ``root/``, the mount point the
overlay is mounted on at start (in the container's mount namespace, like the
image volumes: nothing shows on the host, nothing outlives the container).

A snapshot of a stopped container freezes its upper layer: the directory is
renamed into ``layers/`` and becomes the new top of the lower stack, and an
empty upper takes its place; the snapshot itself is a one-line record
(``subvol-100-disk-0.overlay@<name>``) listing its layers.  No data is copied.
A running container's upper layer cannot move under its mount, so its
snapshot copies the upper layer (the container's own changes only) while
the container is frozen.  Rollback points the volume at the snapshot's layers
with an empty upper; a linked clone does the same in a new volume and
records its origin, so the snapshot it stands on cannot be deleted while it
exists.  A stopped snapshot and a rollback record their intent before they move anything;
:mod:`engine.storage.overlay_repair` finishes or undoes one a crash cut short.  Layers no
record refers to are removed; template layers stay as a cache.  Nothing holds an upper
layer to a size, so a size is refused (``size_enforced`` is false;
:meth:`engine.storage.Storage.driver_for_new`), and so is a resize.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from engine import faults
from engine.config import write_atomic, write_atomic_many
from engine.errors import HostError, NotFound, NotSupported
from engine.storage import overlay_repair
from engine.storage.base import Activation, Driver, Fill, Info, copy_tree_reflink, remove_path

MOUNT_OPTIONS = "index=off,redirect_dir=off,metacopy=off,xino=off"
EMPTY = "empty"
MAX_LAYERS = 400  # the kernel stacks at most 500 lower layers


class OverlayDriver(Driver):
    info = Info(
        "overlay",
        snapshots_instant=True,
        linked_clones=True,
        clones_depend_on_snapshot=True,
        size_enforced=False,
        block_backed=False,
        mounted_at_start=True,
        backup_snapshots=True,
    )
    suffix = ".overlay"

    def __init__(self, storage):
        super().__init__(storage)
        self.layers = storage.path / "layers"

    # ---- layers ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One storage-wide lock for layer creation and removal (containers share layers)."""
        self.layers.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.layers / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _empty_layer(self) -> None:
        path = self.layers / EMPTY
        if not path.exists():
            path.mkdir(mode=0o755)

    def template_layer(self, key: str, fill: Fill) -> str:
        """The layer holding a template's tree, made on first use and shared afterwards."""
        layer = "t" + hashlib.sha256(key.encode()).hexdigest()[:16]
        with self._locked():
            if not (self.layers / layer).is_dir():
                fill(self.layers / layer)  # made atomically: a hidden sibling renamed into place
        return layer

    def _new_layer_id(self) -> str:
        return "s" + os.urandom(8).hex()

    def _read_layers(self, record: Path) -> list[str]:
        try:
            text = record.read_text().strip()
        except FileNotFoundError:
            raise NotFound(f"{record} does not exist") from None
        layers = [p for p in text.split(":") if p]
        for layer in layers:
            if not layer.replace("-", "").isalnum():
                raise HostError(f"{record}: bad layer name '{layer}'")
        return layers

    def _write_layers(self, record: Path, layers: list[str]) -> None:
        write_atomic(record, ":".join(layers) + "\n", mode=0o600)

    def repair(self) -> list[tuple[int, str]]:
        """Finish or undo every snapshot or rollback a killed process left half done (:mod:`.overlay_repair`):
        (container ID, what was done) for each.  The lock is taken only if an intent is seen (a tick must not
        wait for a running container's snapshot copy); one cleared meanwhile is skipped under it."""
        if not overlay_repair.pending(self.images):
            return []
        with self._locked():
            found = [(path, overlay_repair.repair(self, path)) for path in overlay_repair.pending(self.images)]
        return [(int(path.parent.name), done) for path, done in found if done]

    def _repair_volume(self, path: Path) -> None:
        """Repair one volume before it is used; no lock is taken when nothing is pending (the usual case)."""
        if os.path.lexists(path / overlay_repair.PENDING):
            with self._locked():
                overlay_repair.repair(self, path)

    def gc(self) -> list[str]:
        """Remove snapshot layers that no volume, snapshot, clone or unrepaired intent refers to."""
        with self._locked():
            used = set()
            for path in overlay_repair.pending(self.images):
                try:
                    overlay_repair.repair(self, path)
                except (OSError, HostError):
                    used |= overlay_repair.intent_layers(path)  # kept until a repair succeeds
            for record in self.images.glob("*/*.overlay/lower"):
                used.update(self._read_layers(record))
            for record in self.images.glob("*/*.overlay@*"):
                used.update(self._read_layers(record))
            removed = []
            for layer in self.layers.iterdir() if self.layers.is_dir() else []:
                if layer.name.startswith("s") and layer.name not in used:
                    remove_path(layer)
                    removed.append(layer.name)
            return removed

    # ---- volumes -----------------------------------------------------------------------------
    def rootfs(self, vol: str) -> Path:
        return self.path(vol) / "root"

    def _make_volume(
        self, vol: str, owner: int, layers: list[str], upper_like: Path | None, origin: str | None = None
    ) -> None:
        """The volume directory: its layer list, an empty upper (root attributes like ``upper_like``)."""
        path = self.path(vol)
        if os.path.lexists(path):
            raise HostError(f"{path} already exists")
        staged = path.with_name(f".{path.name}.partial")
        remove_path(staged)
        staged.mkdir(mode=0o700)
        try:
            os.chown(staged, owner, owner)
            for name in ("upper", "work", "root"):
                (staged / name).mkdir(mode=0o755)
            _copy_root_attrs(upper_like, staged / "upper", owner)
            os.chown(staged / "root", owner, owner)
            self._write_layers(staged / "lower", layers)
            if origin:
                write_atomic(staged / "origin", origin + "\n", mode=0o600)
            os.rename(staged, path)
        except BaseException:
            remove_path(staged)
            raise

    def create(
        self, ctid: int, disk: int, owner: int, size: int | None, fill: Fill | None, fill_key: str | None = None
    ) -> str:
        self.owner_dir(ctid, owner)
        vol = self.volname(ctid, disk)
        with self._locked():
            self._empty_layer()
        if fill is not None and fill_key:
            layer = self.template_layer(fill_key, fill)
            self._make_volume(vol, owner, [layer, EMPTY], self.layers / layer)
            return vol
        self._make_volume(vol, owner, [EMPTY], None)
        if fill is not None:  # a tree of its own (a full copy): it becomes the upper layer
            upper = self.path(vol) / "upper"
            try:
                os.rmdir(upper)
                fill(upper)
            except BaseException:
                self.delete(vol)
                raise
        return vol

    def delete(self, vol: str) -> None:
        path = self.path(vol)
        self._repair_volume(path)
        for snap in path.parent.glob(f"{path.name}@*"):
            snap.unlink()
        remove_path(path)
        self.gc()

    def activate(self, vol: str) -> Activation:
        path = self.path(vol)
        self._repair_volume(path)
        layers = self._read_layers(path / "lower")
        rel = os.path.relpath(path, self.storage.path)
        lower = ":".join(f"layers/{layer}" for layer in layers)
        data = f"lowerdir={lower},upperdir={rel}/upper,workdir={rel}/work,{MOUNT_OPTIONS}"
        return Activation("overlay", "overlay", data=data, cwd=str(self.storage.path))

    def snapshot(self, vol: str, snap: str, running_root: int | None) -> None:
        path = self.path(vol)
        record = self.snapshot_path(vol, snap)
        layer = self._new_layer_id()
        with self._locked():
            overlay_repair.repair(self, path)
            layers = self._read_layers(path / "lower")
            if len(layers) >= MAX_LAYERS:
                raise HostError(f"{vol} already stacks {len(layers)} layers; make a full clone to flatten it")
            if running_root is not None:
                # No syncfs first: the copy reads the upper layer through the page cache, which holds the
                # frozen container's last writes whether or not they reached the disk (flushing the whole
                # host file system under freeze was most of a running snapshot's time).  The copy is
                # flushed after the thaw (settle_snapshot), before the snapshot is committed.
                copy_tree_reflink(path / "upper", self.layers / layer, f"snapshot '{snap}'")
                try:
                    self._write_layers(record, [layer, *layers])
                except BaseException:
                    remove_path(self.layers / layer)
                    raise
                return
            self._freeze_upper(path, record, snap, layer, layers)

    def _freeze_upper(self, path: Path, record: Path, snap: str, layer: str, layers: list[str]) -> None:
        """A stopped volume's snapshot: its upper layer becomes ``layers/<layer>``, an empty one replaces it.

        The intent goes first, so a kill anywhere after leaves what :func:`overlay_repair.repair` finishes or
        undoes (the layer is never left for the collector)."""
        upper = path / "upper"
        fresh = path / ".upper.new"
        remove_path(fresh)
        fresh.mkdir(mode=0o755)
        _copy_root_attrs(upper, fresh, os.lstat(upper).st_uid)
        overlay_repair.write_intent(path, {"op": "snapshot", "snap": snap, "layer": layer, "lower": layers})
        faults.point("overlay-snapshot:intent")
        try:
            os.rename(upper, self.layers / layer)
            faults.point("overlay-snapshot:moved")
            os.rename(fresh, upper)
            faults.point("overlay-snapshot:swapped")
            text = ":".join([layer, *layers]) + "\n"
            write_atomic_many([(path / "lower", text), (record, text)], mode=0o600)
            faults.point("overlay-snapshot:recorded")
        except BaseException:
            # Put the upper layer back where it was: the volume is as before.
            record.unlink(missing_ok=True)
            overlay_repair.repair(self, path)
            raise
        overlay_repair.clear_intent(path)
        overlay_repair.clear_work(path / "work")

    def settle_snapshot(self, vol: str, snap: str) -> None:
        """A running container's snapshot copied its upper layer: write the copy out before it is committed.

        Run after the thaw (the container is not held while the host's disk catches up); a crash before the
        commit leaves the snapshot unfinished, which recovery removes."""
        from engine.storage.mountns import syncfs

        fd = os.open(self.layers, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            syncfs(fd)
        finally:
            os.close(fd)

    def rollback(self, vol: str, snap: str) -> None:
        path = self.path(vol)
        record = self.snapshot_path(vol, snap)
        with self._locked():
            overlay_repair.repair(self, path)
            if not record.is_file():
                raise NotFound(f"snapshot '{snap}': {record} does not exist")
            layers = self._read_layers(record)
            before = self._read_layers(path / "lower")
            old = path / ".upper.old"
            remove_path(old)
            fresh = path / ".upper.new"
            remove_path(fresh)
            fresh.mkdir(mode=0o755)
            _copy_root_attrs(self.layers / layers[0], fresh, os.lstat(path / "upper").st_uid)
            # Once the intent stands, a kill leaves a rollback that repair undoes (before the empty upper is
            # in place) or finishes (after): never a volume without an upper layer.
            overlay_repair.write_intent(path, {"op": "rollback", "snap": snap, "layers": layers, "lower": before})
            faults.point("overlay-rollback:intent")
            try:
                os.rename(path / "upper", old)
                faults.point("overlay-rollback:parked")
                os.rename(fresh, path / "upper")
                faults.point("overlay-rollback:swapped")
                self._write_layers(path / "lower", layers)
                faults.point("overlay-rollback:recorded")
            except BaseException:
                with contextlib.suppress(OSError, HostError):  # as it was; if this fails too, repair finishes it
                    overlay_repair.undo_rollback(self, path, before)
                raise
            overlay_repair.clear_work(path / "work")
            remove_path(old)
            overlay_repair.clear_intent(path)
        self.gc()

    def delete_snapshot(self, vol: str, snap: str) -> None:
        self.snapshot_path(vol, snap).unlink(missing_ok=True)
        self.gc()

    def linked_clones(self, vol: str, snap: str) -> list[int]:
        wanted = f"{vol}@{snap}"
        found = []
        for origin in self.images.glob("*/*.overlay/origin"):
            try:
                if origin.read_text().strip() == wanted:
                    found.append(int(origin.parent.parent.name))
            except (OSError, ValueError):
                continue
        return sorted(found)

    def clone(
        self, vol: str, snap: str | None, ctid: int, disk: int, owner: int, linked: bool, size: int | None = None
    ) -> str:
        self.owner_dir(ctid, owner)
        new = self.volname(ctid, disk)
        if snap:
            layers = self._read_layers(self.snapshot_path(vol, snap))
            self._make_volume(new, owner, layers, self.layers / layers[0], origin=f"{vol}@{snap}" if linked else None)
            return new
        # The current state: the read-only layers are shared, the source's own changes copied.
        source = self.path(vol)
        layers = self._read_layers(source / "lower")
        self._make_volume(new, owner, layers, source / "upper")
        target = self.path(new) / "upper"
        try:
            os.rmdir(target)
            copy_tree_reflink(source / "upper", target, f"clone to {ctid}")
        except BaseException:
            self.delete(new)
            raise
        return new

    def resize(self, vol: str, size: int, running_root: int | None) -> None:
        raise NotSupported(f"storage '{self.storage.id}': an overlay volume cannot be held to a size")

    def copy_source(self, vol: str, snap: str | None) -> Path:
        """Mount the merged tree read-only on the volume's mount point (inside a private mount namespace)."""
        path = self.path(vol)
        if snap:
            layers = self._read_layers(self.snapshot_path(vol, snap))
        else:
            layers = [os.path.relpath(path / "upper", self.layers), *self._read_layers(path / "lower")]
        return self._mount_read_only(vol, layers)

    def _mount_read_only(self, vol: str, layers: list[str]) -> Path:
        from engine import syscalls as sc

        if len(layers) < 2:
            layers = [*layers, EMPTY]
        os.chdir(self.layers)
        sc.mount(
            "overlay", str(self.rootfs(vol)), "overlay", sc.MS_RDONLY, f"lowerdir={':'.join(layers)},{MOUNT_OPTIONS}"
        )
        return self.rootfs(vol)

    # A backup's snapshot: the volume's layers frozen, as a snapshot would make them, recorded as
    # ``…overlay@.vzdump`` (so the layer garbage collector keeps them) and mounted read-only privately.
    def take_backup_snapshot(self, vol: str, running_root: int | None) -> None:
        path = self.path(vol)
        record = self.backup_snapshot_path(vol)
        self.drop_backup_snapshot(vol)
        layers = self._read_layers(path / "lower")
        layer = self._new_layer_id()
        with self._locked():
            # The container's own changes (its upper layer) are copied (shared extents where the file
            # system can): the upper cannot move from under the running container's mount.
            copy_tree_reflink(path / "upper", self.layers / layer, "backup snapshot")
            try:
                self._write_layers(record, [layer, *layers])
            except BaseException:
                remove_path(self.layers / layer)
                raise

    @contextlib.contextmanager
    def backup_snapshot_tree(self, vol: str) -> Iterator[Path]:
        from engine.storage.mountns import holding

        layers = self._read_layers(self.backup_snapshot_path(vol))
        with holding(self._mount_read_only, vol, layers) as root:
            yield root

    def drop_backup_snapshot(self, vol: str) -> None:
        record = self.backup_snapshot_path(vol)
        if os.path.lexists(record):
            record.unlink()
            self.gc()


def _copy_root_attrs(source: Path | None, target: Path, owner: int) -> None:
    if source is None:
        os.chown(target, owner, owner)
        os.chmod(target, 0o755)
        return
    st = os.lstat(source)
    os.chown(target, st.st_uid, st.st_gid)
    os.chmod(target, st.st_mode & 0o7777)
