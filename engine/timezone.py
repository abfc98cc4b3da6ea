"""``timezone: host | <zone>``: the container's /etc/localtime, set at each start as Proxmox sets it.

``/etc/localtime`` becomes a symlink to ``/usr/share/zoneinfo/<zone>`` of the
container (``host``: the node's own zone), and ``/etc/timezone`` gets the name
where the container has that file (Debian).  A container without that zone
file (busybox, a minimal image) is left as it is, as Proxmox leaves it.
Paths are resolved inside the container's root (``engine.distro.Root``).
"""

from __future__ import annotations

import os

from engine.config import ContainerConfig

ZONEINFO = "/usr/share/zoneinfo/"


def host_zone() -> str:
    """The node's zone name: /etc/localtime's link target below zoneinfo, else /etc/timezone, else UTC."""
    try:
        target = os.readlink("/etc/localtime")
        if "zoneinfo/" in target:
            return target.split("zoneinfo/", 1)[1]
    except OSError:
        pass
    try:
        with open("/etc/timezone") as handle:
            name = handle.read().strip()
            if name:
                return name
    except OSError:
        pass
    return "Etc/UTC"


def start_step(config: ContainerConfig):
    """The start step run inside (cwd its root, as its root), or None when the config sets no timezone."""
    wanted = config.get("timezone")
    if not wanted:
        return None
    zone = host_zone() if wanted == "host" else wanted

    def timezone() -> None:
        from engine.distro.files import Root

        with Root("/") as root:
            if not root.is_file(ZONEINFO.lstrip("/") + zone) or root.ignored("etc/localtime"):
                return
            if root.readlink("etc/localtime") != ZONEINFO + zone:
                if root.exists("etc/localtime") or root.is_symlink("etc/localtime"):
                    root.pending["etc/localtime"] = (None, None)  # staged removals apply after links: first
                    root.commit()
                root.symlink(ZONEINFO + zone, "etc/localtime")
            if root.is_file("etc/timezone"):
                root.write("etc/timezone", zone + "\n")
            root.commit()

    return timezone
