"""template: a stopped container turned into a read-only base for clones, as ``pct template``.

The config gets ``template: 1`` (Proxmox's key); from then on the container
never starts, and its volumes are never written through it: start, snapshot,
rollback, resize, a mount point's change and ``move-volume`` are refused by
name (:func:`engine.node.check_not_template`); only clones are made from it,
and a clone is a normal container (the key is not copied).  Cloning its
current state is as cheap as the storage allows, since nothing can change it
meanwhile: a btrfs subvolume snapshot, an overlay clone sharing its read-only
layers, a reflinked image where the host file system can.  As in Proxmox the
conversion is refused while the container runs, when it has snapshots, when
it is a template already, and for a volume that is a host directory (a bind
mount is not the container's to freeze).  There is no way back but a clone,
as in Proxmox.
"""

from __future__ import annotations

from engine.config import write_config
from engine.errors import InvalidState, ValidationError
from engine.node import check_unlocked, is_template
from engine.state import container_lock
from engine.volumes import volumes_of


class TemplateOps:
    """Mixed into :class:`engine.lifecycle.Engine`."""

    def template(self, ctid: int) -> None:
        with container_lock(self.layout, ctid):
            config = self.config(ctid)
            check_unlocked(config)
            if is_template(config):
                raise InvalidState(f"container {ctid} is a template already")
            if self.node.running(ctid):
                raise InvalidState(f"container {ctid} is running: stop it before converting it to a template")
            if config.snapshots:
                raise InvalidState(
                    f"container {ctid} has snapshots ({', '.join(sorted(config.snapshots))}): "
                    "a template cannot have any; delete them first"
                )
            for volume in volumes_of(config.current):
                if volume.is_bind:
                    raise ValidationError(
                        f"{volume.key}: '{volume.volid}' is a host directory; a template's volumes must be "
                        "on a storage (remove the mount point first)",
                        key=volume.key,
                    )
            config.set("template", "1")
            write_config(self.layout.config_path(ctid), config)
