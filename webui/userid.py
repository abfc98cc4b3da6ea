"""Proxmox user IDs (``name@realm``) for Caisson's users, where Proxmox's formats carry one (UPIDs, the API).

Caisson's own accounts live in its database, which is what Proxmox calls the
``pve`` realm (its built-in authentication server); work that no user asked
for (scheduled backups, the node's own jobs) runs as ``root@pam``, as
Proxmox's scheduler does.
"""

from __future__ import annotations

REALM = "pve"
SYSTEM_USERID = "root@pam"


def userid(user) -> str:
    """``alice`` -> ``alice@pve``; no user -> ``root@pam``."""
    if user is None or not getattr(user, "username", ""):
        return SYSTEM_USERID
    return f"{user.username}@{REALM}"
