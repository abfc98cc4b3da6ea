"""The handlers, one module per part of Proxmox's tree; importing this registers them all."""

from webui.pve.views import access, cluster, lxc, lxc_more, migrate, storage, tasks  # noqa: F401
