"""suspend and resume: a running container frozen whole by its cgroup's freezer, and thawed.

Proxmox's ``pct suspend`` checkpoints to disk with CRIU (marked experimental);
Caisson freezes in place instead, as ``lxc-freeze`` does: the processes keep
their memory and stop being scheduled, network peers see silence, and
``resume`` thaws them where they were.  No process of the engine stays
behind: the freezer state lives in the cgroup, so ``status`` reads it back
(``paused``; Proxmox reports a frozen guest's ``qmpstatus`` so).

While suspended, state changes that need the container to run (shutdown,
reboot, exec, push/pull) are refused by name; a hard ``stop`` still works
(the kernel kills frozen tasks), and snapshots and backups leave it frozen.
"""

from __future__ import annotations

from engine.errors import InvalidState
from engine.node import check_unlocked
from engine.state import container_lock


class SuspendOps:
    """Mixed into :class:`engine.lifecycle.Engine`."""

    def suspend(self, ctid: int) -> None:
        """Freeze every process of a running container (VM.PowerMgmt in the web tier)."""
        with container_lock(self.layout, ctid):
            check_unlocked(self.config(ctid))
            self._require_running(ctid)
            if self.cgroups.frozen(str(ctid)):
                raise InvalidState(f"container {ctid} is already suspended")
            self.cgroups.freeze(str(ctid))

    def resume(self, ctid: int) -> None:
        """Thaw a suspended container."""
        with container_lock(self.layout, ctid):
            self.config(ctid)
            self._require_running(ctid)
            if not self.cgroups.frozen(str(ctid)):
                raise InvalidState(f"container {ctid} is not suspended")
            self.cgroups.thaw(str(ctid))

    def paused(self, ctid: int) -> bool:
        return self.cgroups.frozen(str(ctid))

    def _require_running(self, ctid: int):
        record = self.node.running(ctid)
        if not record:
            raise InvalidState(f"container {ctid} is not running")
        return record


def refuse_if_paused(node, ctid: int, what: str) -> None:
    """InvalidState when ``what`` needs the container's processes to run and it is suspended."""
    if node.cgroups.frozen(str(ctid)):
        raise InvalidState(f"container {ctid} is suspended: resume it before {what}")
