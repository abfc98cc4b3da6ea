"""Creating and destroying containers: the rootfs from a template or an archive, replacing one, holding one."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from engine.allocation import clear_interrupted_create, free_leftovers, owned_volumes
from engine.config import ContainerConfig, parse_ctid
from engine.create_steps import NewContainer
from engine.errors import InvalidState, ValidationError
from engine.node import CREATE_LOCK, check_unlocked
from engine.power import hard_stop
from engine.state import container_lock
from engine.status import ContainerStatus
from engine.storage import parse_new_volume

VZTMPL_PREFIX = "local:vztmpl/"  # Proxmox's name for a template in the local store

__all__ = ["CREATE_LOCK", "VZTMPL_PREFIX", "CreationOps"]


class CreationOps:
    """Mixed into :class:`engine.lifecycle.Engine`: create (its steps in :mod:`engine.create_steps`),
    templates of containers, destroy, holds."""

    # ---- create and destroy ----------------------------------------------------------------
    def create(
        self,
        ctid: int | str,
        source: Path | str,
        options: dict[str, str] | None = None,
        *,
        progress: Callable[[int, int], None] | None = None,
        replace: bool = False,
        skip_devices: bool = False,
        exclude: Iterable[str] = (),
        finish: Callable[[], None] | None = None,
        isolated_idmap: bool = False,
        template_fixups: bool = True,
        keep_snapshots: bool = False,
    ) -> ContainerStatus:
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
        volumes and snapshots are removed last (``keep_snapshots``: they stay, the old volumes as ``unusedN``, so
        a snapshot taken just before rolls the replacement back); a failure before the switch leaves the old
        one as it was.

        A new container's config is written first with ``lock: create``, and again as each volume is
        allocated, so a process killed mid-way leaves a config that names what it made; the lock is
        cleared at the end.  A create, a restore or ``unlock`` of an ID in ``lock: create`` removes
        those leftovers first.  ``finish()`` runs with the config written, under the container's lock:
        for a new container before the lock is cleared (a failure there undoes the create), for a
        replaced one after the switch.  ``template_fixups`` off (a restore) leaves the tree as it came;
        else the distribution's create-time fix-ups run (:func:`engine.distro.post_create`).

        The steps and their undo are :mod:`engine.create_steps`; this method is the ``validate`` step.
        """
        ctid = parse_ctid(ctid)
        source = self.template_path(source)
        config = ContainerConfig(ctid)
        options = dict(options or {})
        storage_id, size, rootfs_props = _new_rootfs(options.pop("rootfs", None), options.pop("storage", None))
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
        NewContainer(
            self.node,
            config,
            source,
            storage_id,
            size,
            rootfs_props,
            progress=progress,
            replace=replace,
            skip_devices=skip_devices,
            exclude=tuple(exclude),
            finish=finish,
            isolated_idmap=isolated_idmap,
            own_idmap=bool(idmap_lines),
            fixups=template_fixups,
            keep_snapshots=keep_snapshots,
        ).run()
        return self.status(ctid)

    def clear_interrupted_create(self, ctid: int | str) -> bool:
        """Remove what a killed create or restore left (a config in ``lock: create``); False if none."""
        ctid = parse_ctid(ctid)
        with container_lock(self.layout, ctid):
            return clear_interrupted_create(self.node, ctid)

    def hold(self, ctid: int, lock: str = "backup", timeout: float = 10.0):
        """A context manager holding the container for a long operation with ``lock: <lock>`` persisted
        in its config; yields an :class:`engine.hold.Held` (shutdown, start, freeze, volume trees,
        snapshots).  See :mod:`engine.hold`."""
        from engine.hold import hold

        return hold(self, ctid, lock, timeout)

    def template_path(self, source: Path | str) -> Path:
        """A path as given, or the store's file for a ``local:vztmpl/<name>`` volume."""
        text = str(source)
        if not text.startswith(VZTMPL_PREFIX):
            return Path(source)
        name = text[len(VZTMPL_PREFIX) :]
        if not name or "/" in name or "\x00" in name or name.startswith("."):
            raise ValidationError(f"template '{text}': the name must be a file name in the store", key="ostemplate")
        return self.layout.templates / name

    def make_template(self, ctid: int, name: str) -> Path:
        """A custom template in the store from a stopped container, its identity cleared."""
        from engine.templates.custom import make_template

        with container_lock(self.layout, ctid):
            config = self.config(ctid)
            if config.current.values.get("lock") == CREATE_LOCK:
                check_unlocked(config)
            if self.node.running(ctid):
                raise InvalidState(f"container {ctid} is running; stop it before making a template of it")
            _, driver, vol = self.node.rootfs_volume(config)
            # Through the driver: an image or overlay is only a mount point on the host; its tree is
            # mounted read-only in a private namespace for the packing.
            with driver.tree(vol) as root:
                return make_template(root, self.node.idmap_of(config), self.layout.templates, name)

    def destroy(self, ctid: int, force: bool = False) -> None:
        # remove=True: the lock file goes as the flock is let go, never before (see container_lock)
        with container_lock(self.layout, ctid, remove=True):
            config = self.config(ctid)
            if config.get("protection"):
                raise InvalidState(f"container {ctid} is protected; clear 'protection' first")
            if self.node.running(ctid):
                if not force:
                    raise InvalidState(f"container {ctid} is running; stop it first or destroy with force")
                hard_stop(self.node, ctid)
            volumes = owned_volumes(self.node, ctid, config)
            for driver, vol in volumes.values():
                driver.delete(vol)
            self.layout.config_path(ctid).unlink()
            free_leftovers(self.node, ctid)
            from engine.oci import restart

            for path in (
                self.layout.console_log(ctid),
                self.layout.run_record(ctid),
                *restart.files(self.layout, ctid),
                self.layout.run / f"{ctid}.post-stop",  # engine.hooks.claim_post_stop
                self.layout.run / f"{ctid}.notify.log",  # engine.notify.launch
            ):
                path.unlink(missing_ok=True)


def _new_rootfs(rootfs: str | None, storage: str | None) -> tuple[str, int | None, dict]:
    """The storage and size a new rootfs goes to: ``rootfs=<storage>:<GiB>`` or ``storage=<id>``."""
    if rootfs is None:
        return storage or "local", None, {}
    from engine.config import SCHEMA

    props = SCHEMA["rootfs"](str(rootfs), "rootfs")
    new = parse_new_volume(str(props.pop("volume")), "rootfs")
    if new is None:
        raise ValidationError(
            f"rootfs: at create give '<storage>:<size in GiB>' (e.g. local-btrfs:8), not '{rootfs}'", key="rootfs"
        )
    props.pop("size", None)
    return new[0], new[1], props
