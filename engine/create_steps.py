"""Container create: one linear list of named steps under one Reverter, like :mod:`engine.start`.

:meth:`engine.creation.CreationOps.create` checks the request (the step
``validate``) and builds a :class:`NewContainer`; :meth:`NewContainer.run`
takes the locks and runs, in order:

``idmap``
    the container's id map: its own, or a free range (:mod:`engine.idranges`);
``clear-interrupted``
    what a killed create or restore of this ID left (``lock: create``);
``reserve``
    a new ID's config written with ``lock: create``, or the container to replace checked;
``allocate``
    the rootfs volume's storage and disk number, recorded in the config before it is made;
``unpack``
    the volume made and filled from the template or archive, ids shifted by the map;
``image-config``
    an OCI image's config mapped onto the container's (:mod:`engine.oci.imageconfig`): OCI archives only;
``inspect``
    the tree's init (refused without one, unless an ``entrypoint`` runs instead) and ``ostype``;
``mount-points``
    the volumes ``mpN: <storage>:<GiB>`` ask for;
``network``
    MACs and pool addresses;
``distro``
    the family's create-time fix-ups (:func:`engine.distro.post_create`): templates only;
``finish``
    the caller's step (a restore's volumes, root's credentials) on a new container;
``write-config``
    the lock cleared (a new container) or the config switched (a replaced one).

Each step registers its undo as it goes, so a failure leaves the node as it
was; the exception carries a note naming the step.  A replaced container's old
volumes are removed only after the switch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine import faults, idranges, inits
from engine.allocation import (
    allocate_mount_points,
    clear_interrupted_create,
    configure_network,
    disks_in_use,
    free_disk,
    free_leftovers,
    owned_volumes,
)
from engine.config import OSTYPES, ContainerConfig, write_config
from engine.errors import AlreadyExists, EngineError, InvalidState, ValidationError
from engine.idmap import IdMap
from engine.node import CREATE_LOCK, Node, check_unlocked
from engine.reverter import Reverter
from engine.state import container_lock
from engine.volumes import render_props, volumes_of


@dataclass
class NewContainer:
    """A validated create request and what its steps made so far."""

    node: Node
    config: ContainerConfig
    source: Path
    storage_id: str
    size: int | None
    rootfs_props: dict
    progress: Callable[[int, int], None] | None = None
    replace: bool = False
    skip_devices: bool = False
    exclude: tuple[str, ...] = ()
    finish: Callable[[], None] | None = None
    isolated_idmap: bool = False
    own_idmap: bool = False  # the request gave an lxc.idmap
    fixups: bool = True  # the distro step: a template's, not a restored backup's
    keep_snapshots: bool = False  # a replaced container's snapshots (and so its old volumes) stay
    # made by the steps
    idmap: IdMap | None = None
    old: ContainerConfig | None = None
    old_volumes: dict = field(default_factory=dict)
    used: set[int] = field(default_factory=set)
    driver: object = None
    disk: int = 0
    vol: str | None = None

    @property
    def ctid(self) -> int:
        return self.config.ctid

    @property
    def fresh(self) -> bool:
        return self.old is None

    @property
    def owner(self) -> int:
        return self.idmap.host_uid(0) if self.idmap else 0

    def run(self) -> None:
        isolating = self.config.unprivileged and (self.isolated_idmap or self.own_idmap)
        with (
            idranges.node_lock(self.node.layout.run) if isolating else contextlib.nullcontext(),
            container_lock(self.node.layout, self.ctid),
            Reverter() as revert,
        ):
            steps = [
                ("idmap", lambda: self.choose_idmap(isolating)),
                ("clear-interrupted", lambda: clear_interrupted_create(self.node, self.ctid)),
                ("reserve", lambda: self.reserve(revert)),
                ("allocate", self.allocate),
                ("unpack", lambda: self.unpack(revert)),
                ("image-config", self.image_config),
                ("inspect", self.inspect),
                (
                    "mount-points",
                    lambda: allocate_mount_points(
                        self.node, self.ctid, self.config, self.owner, revert, used=self.used, record=self.record
                    ),
                ),
                ("network", lambda: configure_network(self.node, self.ctid, self.config)),
                ("distro", self.post_create),
                ("finish", self.finish_new),
                ("write-config", self.write),
            ]
            for name, step in steps:
                faults.point(f"create:{name}")
                try:
                    step()
                except BaseException as exc:
                    exc.add_note(f"create of container {self.ctid} failed at step '{name}'")
                    raise
            revert.success()
        if not self.fresh:
            for old_driver, old_vol in [] if self.keep_snapshots else self.old_volumes.values():
                with contextlib.suppress(EngineError, OSError):
                    old_driver.delete(old_vol)
            if self.finish is not None:
                self.finish()

    # ---- the steps, in order ----------------------------------------------------------------
    def choose_idmap(self, isolating: bool) -> None:
        if isolating:
            self.isolate_idmap()
        self.idmap = self.node.idmap_of(self.config)

    def isolate_idmap(self) -> None:
        isolate_idmap(self.node, self.ctid, self.config, self.isolated_idmap)

    def reserve(self, revert: Reverter) -> None:
        if self.node.exists(self.ctid):
            if not self.replace:
                raise AlreadyExists(f"container {self.ctid} already exists")
            self.old = self.node.config(self.ctid)
            self.old_volumes = self.replaceable()
            self.used = disks_in_use(self.old)
            return
        # Volumes without a config are what an interrupted create leaves (the process was
        # killed before its undo ran): nothing else owns them, so they are cleared, not refused.
        free_leftovers(self.node, self.ctid)
        revert.add(free_leftovers, self.node, self.ctid)
        self.config.current.values["lock"] = CREATE_LOCK
        path = self.node.layout.config_path(self.ctid)
        write_config(path, self.config)
        revert.add(path.unlink, True)

    def replaceable(self) -> dict:
        """The volumes of the container that ``create(replace=True)`` may replace; refused if it must stay."""
        check_unlocked(self.old)
        if self.old.get("protection"):
            raise InvalidState(f"container {self.ctid} is protected; clear 'protection' first")
        if self.node.running(self.ctid):
            raise InvalidState(f"container {self.ctid} is running; stop it before replacing it")
        return owned_volumes(self.node, self.ctid, self.old)

    def record(self) -> None:
        """A new container's config names each volume as it is allocated (a kill may come meanwhile)."""
        if self.fresh:
            write_config(self.node.layout.config_path(self.ctid), self.config)

    def set_rootfs(self, vol: str) -> None:
        props = {**self.rootfs_props, "size": self.size} if self.size else self.rootfs_props
        self.config.current.values["rootfs"] = render_props(f"{self.storage_id}:{vol}", props)

    def allocate(self) -> None:
        storage = self.node.storages.get(self.storage_id, content="rootdir")
        self.driver = storage.driver_for_new(self.size)
        self.disk = free_disk(self.driver, self.ctid, self.used)
        self.used.add(self.disk)
        self.set_rootfs(self.driver.volname(self.ctid, self.disk))  # recorded before it is filled
        self.record()

    def unpack(self, revert: Reverter) -> None:
        from engine.unpack import copy_tree, extract_archive  # heavy (zstandard): only create needs it

        source, idmap = self.source, self.idmap

        def fill(target: Path) -> None:
            if source.is_dir():
                copy_tree(source, target, idmap)
            elif self.oci:
                from engine.oci.layers import extract_image

                extract_image(source, target, idmap, arch=str(self.config.get("arch")), progress=self.progress)
            else:
                extract_archive(
                    source, target, idmap, progress=self.progress, skip_devices=self.skip_devices, exclude=self.exclude
                )

        key = None
        if not (self.skip_devices or self.exclude):  # a template as it is: a driver may share it as a layer
            st = source.stat()
            key = f"{source.resolve()}:{st.st_size}:{st.st_mtime_ns}:{idmap.uid_map_text() if idmap else 'host'}"
        self.vol = self.driver.create(self.ctid, self.disk, self.owner, self.size, fill, fill_key=key)
        revert.add(self.driver.delete, self.vol)
        self.set_rootfs(self.vol)

    @property
    def oci(self) -> bool:
        from engine.oci.archive import is_oci_archive

        return is_oci_archive(self.source)

    def image_config(self) -> None:
        if not self.oci:
            return
        from engine.oci import imageconfig
        from engine.oci.archive import OciArchive

        with OciArchive(self.source, str(self.config.get("arch"))) as archive:
            image = imageconfig.ImageConfig.of(archive.config)
        owner = (self.idmap.host_uid(0), self.idmap.host_gid(0)) if self.idmap else (0, 0)
        with self.driver.writable_tree(self.vol) as tree:
            imageconfig.apply(image, self.config, Path(tree), owner)

    def inspect(self) -> None:
        """The init and ostype of the new tree (mounted in a private namespace when it must be)."""

        def look(path: Path) -> tuple[str | None, str]:
            detected = inits.detect(path)
            return (detected.name if detected else None), ostype_of(path)

        if not self.driver.info.mounted_at_start:
            init_name, ostype = look(self.driver.rootfs(self.vol))
        else:
            from engine.storage.mountns import run

            init_name, ostype = run(lambda: look(self.driver.copy_source(self.vol, None)))
        if init_name is None and not self.config.current.values.get("entrypoint"):
            raise ValidationError(
                f"template '{self.source}' has no /sbin/init: it cannot boot as a system container", key="ostemplate"
            )
        if "ostype" not in self.config.current.values:
            self.config.set("ostype", ostype)

    def post_create(self) -> None:
        if not self.fixups:
            return
        from engine import distro

        owner = (self.idmap.host_uid(0), self.idmap.host_gid(0)) if self.idmap else (0, 0)
        with self.driver.writable_tree(self.vol) as tree:
            distro.post_create(tree, self.config, owner)

    def finish_new(self) -> None:
        if self.fresh:
            self.record()
            if self.finish is not None:
                self.finish()
            self.config.current.values.pop("lock", None)

    def write(self) -> None:
        if not self.fresh and self.keep_snapshots:
            self.carry_snapshots()
        write_config(self.node.layout.config_path(self.ctid), self.config)  # a replaced one switches here

    def carry_snapshots(self) -> None:
        """A replaced container keeps its snapshots: their sections, and its old volumes as ``unusedN`` (the
        snapshots' data lives in them), so a rollback brings the old container back and a destroy removes all."""
        from engine.snapconfig import add_unused

        current = self.config.current
        for name, section in self.old.snapshots.items():
            self.config.snapshots[name] = section
        if self.old.current.values.get("parent"):
            current.values["parent"] = self.old.current.values["parent"]
        mine = {str(v.volid) for v in volumes_of(current, storage_only=True)}
        for key, value in self.old.current.values.items():
            if key.startswith("unused") and key[6:].isdigit() and value not in mine:
                add_unused(current, value)
        for volume in volumes_of(self.old.current, storage_only=True):
            if volume.volid in self.old_volumes and volume.volid not in mine:
                add_unused(current, volume.volid)


def ostype_of(rootfs: Path) -> str:
    """Proxmox's ostype from the rootfs's os-release; ``unmanaged`` when there is none (busybox)."""
    for candidate in ("etc/os-release", "usr/lib/os-release"):
        path = rootfs / candidate
        if path.is_file() and not path.is_symlink():
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("ID="):
                    value = line[3:].strip().strip('"')
                    return value if value in OSTYPES else "unmanaged"
    return "unmanaged"


def isolate_idmap(node, ctid: int, config, wanted: bool) -> None:
    """Give ``config`` a free range when ``wanted``, or when its own map is another container's (a clone's,
    a restore's beside the original); the caller holds the node's range lock (``idranges.node_lock``)."""
    default = node.idmap
    requested = node.idmap_of(config)
    taken = []
    for other in node.ids():
        if other != ctid:
            lines = node.config(other).current.raw_values("lxc.idmap")
            if lines:
                taken += idranges.ranges_of(IdMap.from_lxc_lines(lines))
    if requested != default and not any(
        base < start + count and start < base + requested.count
        for base in (requested.uid_base, requested.gid_base)
        for start, count in taken
    ):
        return  # a map of its own already, held by no other container
    if not wanted and requested == default:
        return
    fresh = idranges.allocate(taken, default=default)
    config.current.raw[:] = [(k, v) for k, v in config.current.raw if k != "lxc.idmap"]
    config.current.raw.extend(("lxc.idmap", line) for line in fresh.lxc_lines())
