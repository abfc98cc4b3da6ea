"""Provisioning at first boot: a cloud-init NoCloud seed, or a Caisson first-boot script.

For a template that carries cloud-init, the seed is written where cloud-init's
NoCloud data source reads it, ``/var/lib/cloud/seed/nocloud/`` (``user-data``,
``meta-data`` — by default ``instance-id: caisson-<ID>`` and the hostname —
and ``network-config``), and cloud-init applies it at the first boot as in
LXD.  A template without cloud-init is refused such data by name; it takes a
first-boot script instead: written to ``/var/lib/caisson/firstboot`` (0700,
owned by container root), run by the engine right after a start that finds
it, in the container (its namespaces, cgroup, seccomp filter), detached, with
its output in ``/var/log/caisson-firstboot.log``.  It is renamed to
``firstboot.ran`` before it runs, so it runs exactly once, even if it fails or
the container stops under it.  Under systemd it waits until the boot is done
(``systemctl is-system-running --wait``).

Everything is written into the stopped container's rootfs through
``engine.distro.Root`` (paths resolved inside it, never following its
symlinks out), as root's credentials are.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import InvalidState, ValidationError

SEED_DIR = "var/lib/cloud/seed/nocloud"
FIRSTBOOT = "var/lib/caisson/firstboot"
FIRSTBOOT_LOG = "/var/log/caisson-firstboot.log"
MAX_SIZE = 1 << 20  # per document


@dataclass(frozen=True)
class Provisioning:
    user_data: str | None = None
    meta_data: str | None = None
    network_config: str | None = None
    firstboot: str | None = None

    def __post_init__(self) -> None:
        for key, text in self.documents().items():
            if not isinstance(text, str) or len(text.encode()) > MAX_SIZE or "\x00" in text:
                raise ValidationError(f"{key}: text of at most 1 MiB without NUL bytes", key=key)
        if self.user_data and not self.user_data.lstrip().startswith(("#", "Content-Type:")):
            raise ValidationError(
                "user-data: not cloud-init user data (it starts with '#cloud-config', '#!' or 'Content-Type:')",
                key="user-data",
            )
        if self.firstboot and not self.firstboot.startswith("#!"):
            raise ValidationError("firstboot: a script starting with '#!' (e.g. '#!/bin/sh')", key="firstboot")

    def documents(self) -> dict[str, str]:
        names = {
            "user-data": self.user_data,
            "meta-data": self.meta_data,
            "network-config": self.network_config,
            "firstboot": self.firstboot,
        }
        return {key: text for key, text in names.items() if text}

    @property
    def cloud_init(self) -> bool:
        return bool(self.user_data or self.meta_data or self.network_config)

    @classmethod
    def from_dict(cls, values: dict | None) -> Provisioning | None:
        """From a job's or the API's ``provision`` object (``user_data``, ``meta_data``, ``network_config``,
        ``firstboot``); None when it asks for nothing."""
        if not values:
            return None
        unknown = set(values) - {"user_data", "meta_data", "network_config", "firstboot"}
        if unknown:
            raise ValidationError(f"provision: unknown field(s) {', '.join(sorted(unknown))}", key="provision")
        made = cls(**{k: v or None for k, v in values.items()})
        return made if made.documents() else None


def has_cloud_init(root) -> bool:
    return root.exists("usr/bin/cloud-init") or root.is_dir("etc/cloud")


def write(engine, ctid: int, provisioning: Provisioning) -> list[str]:
    """Write the seed or the script into a stopped container; returns the paths written (inside)."""
    config = engine.config(ctid)
    if engine.status(ctid, stats=False).status != "stopped":
        raise InvalidState(f"container {ctid} is running; provisioning data is written while it is stopped")
    idmap = engine.node.idmap_of(config)
    owner = (idmap.host_uid(0), idmap.host_gid(0)) if idmap else (0, 0)
    _, driver, vol = engine.node.rootfs_volume(config)
    from engine import distro

    with driver.writable_tree(vol) as tree, distro.Root(tree, owner=owner) as root:
        if provisioning.cloud_init:
            if not has_cloud_init(root):
                raise ValidationError(
                    f"user-data: container {ctid}'s template has no cloud-init (no /usr/bin/cloud-init); "
                    "give a first-boot script instead",
                    key="user-data",
                )
            _mkdirs(root, SEED_DIR)
            meta = provisioning.meta_data or f"instance-id: caisson-{ctid}\nlocal-hostname: {config.hostname}\n"
            root.write(f"{SEED_DIR}/meta-data", meta, 0o600)
            root.write(f"{SEED_DIR}/user-data", provisioning.user_data or "#cloud-config\n", 0o600)
            if provisioning.network_config:
                root.write(f"{SEED_DIR}/network-config", provisioning.network_config, 0o600)
        if provisioning.firstboot:
            _mkdirs(root, FIRSTBOOT.rpartition("/")[0])
            root.write(FIRSTBOOT, provisioning.firstboot, 0o700)
        try:
            return ["/" + path for path in root.commit()]
        except OSError as exc:
            raise ValidationError(f"cannot write provisioning data into container {ctid}: {exc}") from None


def _mkdirs(root, relpath: str) -> None:
    parts = relpath.split("/")
    for index in range(1, len(parts) + 1):
        root.make_dir("/".join(parts[:index]), 0o755)
    root.commit()


def run_first_boot(node, ctid: int, pid: int, init: str, config, warn) -> None:
    """After a start: run the first-boot script once if the container still has one (see the module)."""
    import os

    from engine import attach
    from engine.commands import _cgroup_procs_of

    try:
        os.lstat(f"/proc/{pid}/root/{FIRSTBOOT}")  # O_PATH-free peek: a symlink counts as present, sh decides
    except OSError:
        return
    wait = "systemctl is-system-running --wait >/dev/null 2>&1; " if init == "systemd" else ""
    script = (
        f"mv /{FIRSTBOOT} /{FIRSTBOOT}.ran || exit 1; "
        f"(setsid sh -c '{wait}exec /{FIRSTBOOT}.ran' </dev/null >{FIRSTBOOT_LOG} 2>&1 &)"
    )
    spec = attach.AttachSpec(
        init_pid=pid,
        argv=["/bin/sh", "-c", script],
        cgroup_procs=_cgroup_procs_of(pid, node.cgroups.mounts),
        env={},
        cwd="/",
        tty=False,
        seccomp_rules=attach.seccomp.container_rules(config),
        notify_socket=str(attach.notify.socket_path(node.layout.run, ctid)),
    )
    code, _, err = attach.run_capture(spec)
    if code != 0:
        warn(f"the first-boot script of CT {ctid} could not be started: {err.decode(errors='replace').strip()}")
