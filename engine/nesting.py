"""``features:`` nesting, fuse, mknod, mount, force_rw_sys — what each changes at start.

``nesting=1`` lets container root run a container runtime (crun, LXC, Docker)
inside, as LXC's nesting does without AppArmor:

- the /proc and /sys masks and read-only paths, and lxcfs's files, are made by
  container root after it entered its user namespace, so they are not locked:
  the kernel lets a nested runtime mount a proc or sysfs only where the
  existing one is "fully visible" (``mount_too_revealing``), which locked
  masks over files deny.  Container root can therefore lift its masks; what
  they hid stays guarded by the kernel's checks against the host's ids and
  capabilities (/proc/kcore, sysrq-trigger and host-wide sysctls are the
  host root's), though some host-wide read-only files (``sched_debug``,
  ``timer_list``) become readable;
- /proc/sys stays read-only but for /proc/sys/net, which the kernel scopes to
  the container's network namespace;
- its cgroups are delegated in every v1 hierarchy too (the directory,
  ``tasks``, ``cgroup.procs``, ``cgroup.clone_children`` owned by container
  root: it makes and fills sub-cgroups, never changes its own limits); the
  cgroup2 view is delegated for every container;
- the seccomp filter lets it make user namespaces (``engine.seccomp``).

A privileged container's root is the host's uid 0: with masks it can lift it
could write host-wide sysctls (no LSM stops it here), so nesting is refused
for privileged containers.

The container's own pid namespace stays owned by the host's user namespace
(see ``engine.start``), so a procfs of *that* namespace still cannot be mounted
inside; a nested runtime makes a pid namespace of its own (owned by the
container's user namespace) and mounts its procfs, which is what it needs.
(Making the container's pid namespace in the holder would need an init in it
before the setup child can join it: ``pid_for_children`` is empty until then.)

``fuse=1`` passes /dev/fuse (c 10:229, staged 0666 as a ``devN`` is).  ``force_rw_sys=1`` mounts /sys
read-write (writes are still checked against the host's ids).  ``mknod=1``
and ``mount=`` are answered by a seccomp notification supervisor per
container (``engine.notify``, as Proxmox's pve-lxc-syscalld): the kernel alone
refuses device nodes (CAP_MKNOD over the host) and file systems not made for
user namespaces (nfs, cifs) in any Caisson container.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.cgroups.base import FUSE_DEVICE
from engine.config import ContainerConfig
from engine.devices import Device
from engine.errors import ValidationError
from engine.seccomp import user_notif_available


@dataclass
class Features:
    nesting: bool = False
    rw_sys: bool = False
    devices: list[Device] = field(default_factory=list)  # staged and allowed as devN are


def features_of(config: ContainerConfig, warn) -> Features:
    """What the container's ``features`` change at start; refuses nesting in a privileged container."""
    nesting = config.feature("nesting")
    if nesting and not config.unprivileged:
        raise ValidationError(
            "features: nesting=1 needs an unprivileged container here: a privileged container's root is "
            "the host's uid 0 and could lift its /proc masks and write host-wide sysctls",
            key="features",
        )
    result = Features(nesting=nesting, rw_sys=config.feature("force_rw_sys"))
    if config.feature("fuse"):
        fuse = FUSE_DEVICE
        result.devices.append(Device("fuse", "/dev/fuse", fuse.kind, fuse.major, fuse.minor, 0, 0, 0o666, False))
    features = config.get("features") or {}
    if (features.get("mknod") or features.get("mount")) and not user_notif_available():
        warn(
            "features: mknod and mount have no effect: this kernel has no seccomp user notification "
            "(SECCOMP_RET_USER_NOTIF, Linux 5.0); it refuses device nodes and those file systems itself"
        )
    return result
