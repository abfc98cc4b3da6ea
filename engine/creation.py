"""Creating and destroying containers: the rootfs from a template or an archive, replacing one, holding one."""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from engine import idranges, inits
from engine.config import ContainerConfig, parse_ctid, write_config
from engine.errors import AlreadyExists, EngineError, InvalidState, ValidationError
from engine.idmap import IdMap
from engine.reverter import Reverter
from engine.state import container_lock
from engine.status import ContainerStatus
from engine.storage import parse_new_volume
from engine.volumes import check_bind_source, render_props, volumes_of

VZTMPL_PREFIX = "local:vztmpl/"  # Proxmox's name for a template in the local store
CREATE_LOCK = "create"  # Proxmox's persisted lock of a container being created or restored

log = logging.getLogger(__name__)


class CreationOps:
    """Mixed into :class:`engine.lifecycle.Engine`.

    Uses the state readers (:class:`engine.status.StatusOps`) and friends.
    """

    def _isolate_idmap(self, ctid: int, config: ContainerConfig, always: bool) -> None:
        """Give ``config`` a free range when asked, or when its own map is another container's."""
        requested = self._idmap(config)
        taken = []
        for other in self.ids():
            if other != ctid:
                lines = self.config(other).current.raw_values("lxc.idmap")
                if lines:
                    taken += idranges.ranges_of(IdMap.from_lxc_lines(lines))
        if requested != self.idmap and not any(
                base < start + count and start < base + requested.count
                for base in (requested.uid_base, requested.gid_base) for start, count in taken):
            return  # a map of its own already, held by no other container
        if not always and requested == self.idmap:
            return
        fresh = idranges.allocate(taken, default=self.idmap)
        config.current.raw[:] = [(k, v) for k, v in config.current.raw if k != "lxc.idmap"]
        config.current.raw.extend(("lxc.idmap", line) for line in fresh.lxc_lines())

    # ---- create and destroy ----------------------------------------------------------------
    def create(self, ctid: int | str, source: Path | str, options: dict[str, str] | None = None, *,
               progress: Callable[[int, int], None] | None = None, replace: bool = False,
               skip_devices: bool = False, exclude: Iterable[str] = (),
               finish: Callable[[], None] | None = None, isolated_idmap: bool = False) -> ContainerStatus:
        """Create a container from a rootfs tarball or a template directory.

        ``source`` is a path, or a template of the store named as Proxmox does: ``local:vztmpl/<name>``.
        ``options`` are config keys; ``rootfs: <storage>:<GiB>`` gives a size, ``storage`` a place,
        ``lxc.idmap`` (lines, or one string of lines) an id map of the container's own; one another
        container holds (a restore beside the original) is replaced by a free range, as is the default
        map with ``isolated_idmap`` (an unprivileged container's own 65536 ids, :mod:`engine.idranges`).

        ``progress(done, total)`` gets the bytes of the archive read so far.  ``skip_devices`` leaves
        the archive's device nodes out; ``exclude`` names paths in it left out with what is below them.
        With ``replace`` an existing container (stopped, unlocked, not protected) is replaced: the new
        one is built completely beside it, the config is switched in one atomic write, and the old
        volumes and snapshots are removed last; a failure before the switch leaves the old one as it was.

        A new container's config is written first with ``lock: create``, and again as each volume is
        allocated, so a process killed mid-way leaves a config that names what it made; the lock is
        cleared at the end.  A create, a restore or ``unlock`` of an ID in ``lock: create`` removes
        those leftovers first.  ``finish()`` runs with the config written, under the container's lock:
        for a new container before the lock is cleared (a failure there undoes the create), for a
        replaced one after the switch.
        """
        ctid = parse_ctid(ctid)
        source = self.template_path(source)
        config = ContainerConfig(ctid)
        options = dict(options or {})
        storage_id, size, rootfs_props = self._new_rootfs(options.pop("rootfs", None), options.pop("storage", None))
        idmap_lines = options.pop("lxc.idmap", None)
        for key, value in options.items():
            if key in ("lock", "parent"):
                raise ValidationError(f"{key}: set by the engine, not by the caller", key=key)
            config.set(key, str(value))
        if idmap_lines:
            lines = idmap_lines.splitlines() if isinstance(idmap_lines, str) else [str(v) for v in idmap_lines]
            config.current.raw.extend(("lxc.idmap", line.strip()) for line in lines if line.strip())
        if "hostname" not in config.current.values:
            config.set("hostname", f"CT{ctid}")
        if "unprivileged" not in config.current.values:
            config.set("unprivileged", "1")
        if not source.exists():
            raise ValidationError(f"template '{source}' does not exist", key="ostemplate")
        exclude = tuple(exclude)
        path = self.layout.config_path(ctid)
        isolating = config.unprivileged and (isolated_idmap or bool(idmap_lines))
        with (idranges.node_lock(self.layout.run) if isolating else contextlib.nullcontext()), \
                container_lock(self.layout, ctid), Reverter() as revert:
            if isolating:
                self._isolate_idmap(ctid, config, isolated_idmap)
            idmap = self._idmap(config)
            old = None
            self._clear_interrupted_create(ctid)
            if self.exists(ctid):
                if not replace:
                    raise AlreadyExists(f"container {ctid} already exists")
                old = self.config(ctid)
                old_volumes = self._replaceable(ctid, old)
            else:
                # Volumes without a config are what an interrupted create leaves (the process was
                # killed before its undo ran): nothing else owns them, so they are cleared, not refused.
                self._free_leftovers(ctid)
                revert.add(self._free_leftovers, ctid)
                config.current.values["lock"] = CREATE_LOCK
                write_config(path, config)
                revert.add(path.unlink, True)
            fresh = old is None

            def record() -> None:  # a new container's config names each volume as it is allocated
                if fresh:
                    write_config(path, config)

            used = _disks_in_use(old) if old is not None else set()
            owner = idmap.host_uid(0) if idmap else 0
            storage = self.storages.get(storage_id, content="rootdir")
            driver = storage.driver_for_new(size)
            from engine.unpack import copy_tree, extract_archive  # heavy (zstandard): only create needs it

            def fill(target: Path) -> None:
                if source.is_dir():
                    copy_tree(source, target, idmap)
                else:
                    extract_archive(source, target, idmap, progress=progress, skip_devices=skip_devices,
                                    exclude=exclude)

            key = None
            if not (skip_devices or exclude):  # a template as it is: a driver may share it as a layer
                st = source.stat()
                key = f"{source.resolve()}:{st.st_size}:{st.st_mtime_ns}:{idmap.uid_map_text() if idmap else 'host'}"
            disk = _free_disk(driver, ctid, used)
            used.add(disk)

            def set_rootfs(vol: str) -> None:
                config.current.values["rootfs"] = render_props(f"{storage_id}:{vol}", {**rootfs_props, "size": size}
                                                               if size else rootfs_props)

            set_rootfs(driver.volname(ctid, disk))  # recorded before it is filled: a kill may come meanwhile
            record()
            vol = driver.create(ctid, disk, owner, size, fill, fill_key=key)
            revert.add(driver.delete, vol)
            set_rootfs(vol)
            init_name, ostype = self._inspect(driver, vol)
            if init_name is None:
                raise ValidationError(f"template '{source}' has no /sbin/init: it cannot boot as a system container",
                                      key="ostemplate")
            if "ostype" not in config.current.values:
                config.set("ostype", ostype)
            self._allocate_mount_points(ctid, config, owner, revert, used=used, record=record)
            self._configure_network(ctid, config)
            if fresh:
                record()
                if finish is not None:
                    finish()
                config.current.values.pop("lock", None)
            write_config(path, config)  # a replaced container switches here; a new one is unlocked
            revert.success()
            if old is not None:
                for old_driver, old_vol in old_volumes.values():
                    with contextlib.suppress(EngineError, OSError):
                        old_driver.delete(old_vol)
                if finish is not None:
                    finish()
        return self.status(ctid)

    def clear_interrupted_create(self, ctid: int | str) -> bool:
        """Remove what a killed create or restore left (a config in ``lock: create``); False if none."""
        ctid = parse_ctid(ctid)
        with container_lock(self.layout, ctid):
            return self._clear_interrupted_create(ctid)

    def _clear_interrupted_create(self, ctid: int) -> bool:
        """Under the container's lock: the volumes a ``lock: create`` config names, then the config, then
        whatever else the ID has on the storages."""
        path = self.layout.config_path(ctid)
        if not path.exists():
            return False
        config = self.config(ctid)
        if config.current.values.get("lock") != CREATE_LOCK:
            return False
        volids = []
        for volume in volumes_of(config.current, storage_only=True):
            try:
                _, driver, vol = self.storages.resolve(volume.volid, ctid, key=volume.key)
            except ValidationError:
                continue  # not allocated yet (``<storage>:<GiB>``) or not this container's
            with contextlib.suppress(EngineError, OSError):
                driver.delete(vol)
            volids.append(volume.volid)
        log.warning("container %s: a create or restore was interrupted (lock: create); removing what it left: "
                    "%s and its config", ctid, ", ".join(volids) if volids else "no volume")
        path.unlink(missing_ok=True)
        self._free_leftovers(ctid)
        return True

    def _replaceable(self, ctid: int, config: ContainerConfig) -> dict:
        """The volumes of a container that ``create(replace=True)`` may replace; refused if it must stay."""
        self._check_unlocked(config)
        if config.get("protection"):
            raise InvalidState(f"container {ctid} is protected; clear 'protection' first")
        if self._running(ctid):
            raise InvalidState(f"container {ctid} is running; stop it before replacing it")
        return self._owned_volumes(ctid, config)

    def _owned_volumes(self, ctid: int, config: ContainerConfig) -> dict:
        """{volume ID: (driver, vol)} of every section; refused while a linked clone stands on a snapshot."""
        volumes = {}
        for name, section in [(None, config.current), *config.snapshots.items()]:
            for volume in volumes_of(section, storage_only=True):
                try:
                    _, driver, vol = self.storages.resolve(volume.volid, ctid, key=volume.key)
                except ValidationError:
                    continue  # not this container's (a hand-edited config): never destroyed from here
                volumes[volume.volid] = (driver, vol)
                if name is not None:
                    clones = driver.linked_clones(vol, name)
                    if clones:
                        raise InvalidState(f"container {ctid}'s snapshot '{name}' is the base of linked clone"
                                           f"{'s' if len(clones) > 1 else ''} {', '.join(map(str, clones))}; "
                                           "destroy those first")
        return volumes

    def hold(self, ctid: int, lock: str = "backup", timeout: float = 10.0):
        """A context manager holding the container for a long operation with ``lock: <lock>`` persisted
        in its config; yields an :class:`engine.hold.Held` (shutdown, start, freeze, volume trees,
        snapshots).  See :mod:`engine.hold`."""
        from engine.hold import hold

        return hold(self, ctid, lock, timeout)

    def _new_rootfs(self, rootfs: str | None, storage: str | None) -> tuple[str, int | None, dict]:
        """The storage and size a new rootfs goes to: ``rootfs=<storage>:<GiB>`` or ``storage=<id>``."""
        if rootfs is None:
            return storage or "local", None, {}
        from engine.config import SCHEMA

        props = SCHEMA["rootfs"](str(rootfs), "rootfs")
        new = parse_new_volume(str(props.pop("volume")), "rootfs")
        if new is None:
            raise ValidationError(f"rootfs: at create give '<storage>:<size in GiB>' (e.g. local-btrfs:8), "
                                  f"not '{rootfs}'", key="rootfs")
        props.pop("size", None)
        return new[0], new[1], props

    def _inspect(self, driver, vol: str) -> tuple[str | None, str]:
        """The init and ostype of a new volume's tree (mounted in a private namespace when it must be)."""

        def look(path: Path) -> tuple[str | None, str]:
            detected = inits.detect(path)
            return (detected.name if detected else None), _ostype(path)

        if not driver.info.mounted_at_start:
            return look(driver.rootfs(vol))
        from engine.storage.mountns import run

        return run(lambda: look(driver.copy_source(vol, None)))

    def _allocate_mount_points(self, ctid: int, config: ContainerConfig, owner: int, revert: Reverter,
                               keys: set[str] | None = None, used: set[int] | None = None,
                               record: Callable[[], None] | None = None) -> None:
        """Allocate the volumes ``mpN: <storage>:<GiB>,mp=...`` ask for; check bind mounts' host paths.

        ``used`` holds disk numbers taken besides the config's own (those of a container being replaced);
        ``record()`` is called after each volume is allocated and set in ``config``.
        """
        used = set(used or ())
        for volume in volumes_of(config.current) + [v for s in config.snapshots.values() for v in volumes_of(s)]:
            from engine.volumes import disk_number

            number = disk_number(volume.volid)
            if number is not None:
                used.add(number)
        for volume in volumes_of(config.current):
            if volume.key == "rootfs" or (keys is not None and volume.key not in keys):
                continue
            if volume.is_bind:
                check_bind_source(volume.volid, volume.key, self.layout.root)
                continue
            new = parse_new_volume(volume.volid, volume.key)
            if new is None:
                self.storages.resolve(volume.volid, ctid, key=volume.key)  # an existing volume: must be ours
                continue
            storage_id, size = new
            driver = self.storages.get(storage_id, content="rootdir", key=volume.key).driver_for_new(size, volume.key)
            disk = _free_disk(driver, ctid, used, first=1)
            used.add(disk)
            vol = driver.create(ctid, disk, owner, size, None)
            revert.add(driver.delete, vol)
            props = {k: v for k, v in volume.props.items() if k not in ("volume", "size")}
            config.current.values[volume.key] = render_props(f"{storage_id}:{vol}", {**props, "size": size}
                                                             if size else props)
            if record is not None:
                record()

    def template_path(self, source: Path | str) -> Path:
        """A path as given, or the store's file for a ``local:vztmpl/<name>`` volume."""
        text = str(source)
        if not text.startswith(VZTMPL_PREFIX):
            return Path(source)
        name = text[len(VZTMPL_PREFIX):]
        if not name or "/" in name or "\x00" in name or name.startswith("."):
            raise ValidationError(f"template '{text}': the name must be a file name in the store", key="ostemplate")
        return self.layout.templates / name

    def make_template(self, ctid: int, name: str) -> Path:
        """A custom template in the store from a stopped container, its identity cleared."""
        from engine.templates.custom import make_template

        with container_lock(self.layout, ctid):
            config = self.config(ctid)
            if config.current.values.get("lock") == CREATE_LOCK:
                self._check_unlocked(config)
            if self._running(ctid):
                raise InvalidState(f"container {ctid} is running; stop it before making a template of it")
            _, driver, vol = self._rootfs_volume(config)
            # Through the driver: an image or overlay is only a mount point on the host; its tree is
            # mounted read-only in a private namespace for the packing.
            with driver.tree(vol) as root:
                return make_template(root, self._idmap(config), self.layout.templates, name)

    def destroy(self, ctid: int, force: bool = False) -> None:
        with container_lock(self.layout, ctid):
            config = self.config(ctid)
            if config.get("protection"):
                raise InvalidState(f"container {ctid} is protected; clear 'protection' first")
            if self._running(ctid):
                if not force:
                    raise InvalidState(f"container {ctid} is running; stop it first or destroy with force")
                self._hard_stop(ctid)
            volumes = self._owned_volumes(ctid, config)
            for driver, vol in volumes.values():
                driver.delete(vol)
            self.layout.config_path(ctid).unlink()
            self._free_leftovers(ctid)
            for path in (self.layout.console_log(ctid), self.layout.run_record(ctid),
                         self.layout.run / "lock" / f"{ctid}.lock"):
                path.unlink(missing_ok=True)


def _disks_in_use(config: ContainerConfig) -> set[int]:
    """The disk numbers of a config's volumes, in every section."""
    from engine.volumes import disk_number

    used = set()
    for section in [config.current, *config.snapshots.values()]:
        for volume in volumes_of(section, storage_only=True):
            number = disk_number(volume.volid)
            if number is not None:
                used.add(number)
    return used


def _free_disk(driver, ctid: int, used: set[int], first: int = 0) -> int:
    """The lowest disk number from ``first`` that no volume of the container uses or left on the storage."""
    disk = first
    while disk in used or os.path.lexists(driver.path(driver.volname(ctid, disk))):
        disk += 1
    return disk


def _ostype(rootfs: Path) -> str:
    """Proxmox's ostype from the rootfs's os-release; ``unmanaged`` when there is none (busybox)."""
    for candidate in ("etc/os-release", "usr/lib/os-release"):
        path = rootfs / candidate
        if path.is_file() and not path.is_symlink():
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("ID="):
                    value = line[3:].strip().strip('"')
                    return value if value in ("debian", "devuan", "ubuntu", "centos", "fedora", "opensuse",
                                              "archlinux", "alpine", "gentoo", "nixos") else "unmanaged"
    return "unmanaged"
