"""The engine's public API: create, start, stop, shutdown, reboot, destroy, status, list, set, exec.

Every state change takes the container's lock.  No process of the engine
stays behind per container: status is read back from the run record, the
kernel (pid and start time) and the container's cgroup, so a container
started by a process that has since exited or crashed is found again.

:class:`Engine` is the one facade; its methods live in mixins by responsibility:
:mod:`engine.status` (reading state), :mod:`engine.creation` (create, destroy,
hold), :mod:`engine.power` (start, stop, shutdown, reboot),
:mod:`engine.config_changes` (set), :mod:`engine.commands` (exec, enter,
terminals), :mod:`engine.snapshots` (snapshots, clones, resize, unlock),
:mod:`engine.suspend` (suspend, resume), :mod:`engine.files` (push, pull),
:mod:`engine.hostmount` (mount, unmount, df, fstrim, fsck),
:mod:`engine.base_template` (template) and :mod:`engine.move_volume`.
The mixins never call one another: what they share is the :class:`engine.node.Node`
(``self.node``: configs, whether a container runs, its id map and rootfs) and
the functions they import (:mod:`engine.allocation`, the steps of
:mod:`engine.power`, :mod:`engine.create_steps`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from engine import consolelog
from engine.base_template import TemplateOps
from engine.cgroups import detect as detect_cgroups
from engine.cgroups.base import CgroupDriver
from engine.commands import CommandOps
from engine.config_changes import LIVE_KEYS, ConfigChangeOps
from engine.creation import VZTMPL_PREFIX, CreationOps
from engine.files import FileOps
from engine.hostmount import HostMountOps
from engine.idmap import IdMap
from engine.move_volume import MoveVolumeOps
from engine.node import Node
from engine.power import PowerOps
from engine.resize import ResizeOps
from engine.snapshots import SnapshotOps
from engine.state import DEFAULT_CGROUP_PARENT, DEFAULT_ROOT, DEFAULT_RUN, Layout
from engine.status import ContainerStatus, StatusOps
from engine.storage import Storages
from engine.suspend import SuspendOps

PR_SET_CHILD_SUBREAPER = 36

__all__ = ["LIVE_KEYS", "VZTMPL_PREFIX", "ContainerStatus", "Engine"]


def _of_node(name: str) -> property:
    """One of the node's parts under the name callers know; setting it (a test's cap) gives a new Node."""

    def get(self):
        return getattr(self.node, name)

    def set_(self, value) -> None:
        self.node = replace(self.node, **{name: value})

    return property(get, set_)


class Engine(
    StatusOps,
    CreationOps,
    PowerOps,
    ConfigChangeOps,
    CommandOps,
    SnapshotOps,
    ResizeOps,
    SuspendOps,
    FileOps,
    HostMountOps,
    TemplateOps,
    MoveVolumeOps,
):
    """One node's containers.  Cheap to construct; hold one per long-lived process for the warm path."""

    layout, storages, cgroups = _of_node("layout"), _of_node("storages"), _of_node("cgroups")
    idmap, console_log_size = _of_node("idmap"), _of_node("console_log_size")

    def __init__(
        self,
        root: Path | str = DEFAULT_ROOT,
        run_dir: Path | str = DEFAULT_RUN,
        cgroup_parent: str = DEFAULT_CGROUP_PARENT,
        idmap: IdMap | None = None,
        reaper: bool = False,
        cgroups: CgroupDriver | None = None,
        console_log_size: int | None = None,
    ):
        layout = Layout(Path(root), Path(run_dir))
        layout.ensure()
        # The console log cap is a node setting (CAISSON_CONSOLE_LOG_SIZE): every engine process of a node
        # should use the same.
        self.node = Node(
            layout,
            Storages(layout.root),
            cgroups or detect_cgroups(cgroup_parent),
            idmap or IdMap(),
            console_log_size or consolelog.node_size(),
        )
        if reaper:
            # Orphaned container inits are re-parented to this process rather than the host's
            # PID 1, and reaped here when they stop: a long-lived engine (the node agent) leaves
            # no zombie even on hosts whose PID 1 does not reap.
            from engine import syscalls

            syscalls.prctl(PR_SET_CHILD_SUBREAPER, 1)
            from engine import reaper as init_reaper

            node = self.node

            def exited(ctid: int, pid: int) -> None:
                from engine.power import after_self_stop

                after_self_stop(node, ctid, pid)

            init_reaper.start(layout.run, on_exit=exited)
