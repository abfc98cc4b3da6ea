"""The config edits of snapshot, delete and rollback, step by step as Proxmox makes them.

Each function changes a :class:`ContainerConfig` in memory and raises before
changing anything when the step is refused; the caller writes the config after
each step (so a killed operation leaves a file that says where it stopped) and
does the volume work in between.  The steps and their order are Proxmox's
(``__snapshot_prepare``, ``__snapshot_commit``, ``snapshot_delete``,
``snapshot_rollback``), so a Proxmox config goes through them to the same file
Proxmox writes, checked against pve-container's own snapshot test data.
"""

from __future__ import annotations

from engine.config import MAX_UNUSED, ConfigSection, ContainerConfig, _is_unused
from engine.errors import AlreadyExists, InvalidState, NotFound

# What a snapshot does not copy from the current config, nor rollback from the snapshot.
NOT_COPIED = ("snapstate", "snaptime", "vmstate", "lock")
VOLUME_KEYS = ["rootfs"] + [f"mp{i}" for i in range(256)]


def check_unlocked(config: ContainerConfig) -> None:
    lock = config.current.values.get("lock")
    if lock:
        raise InvalidState(f"container {config.ctid} is locked ({lock})")


def snapshot_of(config: ContainerConfig, name: str) -> ConfigSection:
    if name not in config.snapshots:
        known = ", ".join(sorted(config.snapshots)) or "none"
        raise NotFound(f"snapshot '{name}' of container {config.ctid} does not exist (snapshots: {known})")
    return config.snapshots[name]


def storage_volumes(section: ConfigSection) -> list[tuple[str, str]]:
    """(key, volume ID) of each rootfs/mpN on a storage (bind mounts of host paths left out), in key order."""
    found = []
    for key in VOLUME_KEYS:
        value = section.values.get(key)
        if value is None:
            continue
        volid = value.partition(",")[0].removeprefix("volume=")
        if not volid.startswith("/") and ":" in volid:
            found.append((key, volid))
    return found


def copy_section(source: ConfigSection, description: str = "") -> ConfigSection:
    """The settings a snapshot keeps of ``source`` (or rollback brings back): not its lock, snapshot state,
    unused volumes nor description."""
    values = {k: v for k, v in source.values.items() if k not in NOT_COPIED and not _is_unused(k)}
    return ConfigSection(values, list(source.raw), description)


def add_unused(section: ConfigSection, volid: str) -> str | None:
    """Record ``volid`` as the lowest free ``unusedN`` unless it is already listed."""
    free = None
    for index in range(MAX_UNUSED - 1, -1, -1):
        value = section.values.get(f"unused{index}")
        if value == volid:
            return None
        if value is None:
            free = f"unused{index}"
    if free is None:
        raise InvalidState(f"too many unused volumes (unused0 … unused{MAX_UNUSED - 1}); delete some first")
    section.values[free] = volid
    return free


# ---- create: prepare, volume snapshots, commit ----------------------------------------------------
def prepare(config: ContainerConfig, name: str, comment: str, now: int) -> ConfigSection:
    """Lock ``snapshot`` and add the section marked ``snapstate: prepare``."""
    if config.current.values.get("template") == "1":
        raise InvalidState(f"container {config.ctid} is a template; a template has no snapshots")
    check_unlocked(config)
    if name in config.snapshots:
        raise AlreadyExists(f"snapshot name '{name}' already used")
    for other in config.snapshots.values():
        if other.values.get("parent") == name:  # a stale reference would make a cycle
            del other.values["parent"]
    section = copy_section(config.current, comment)
    section.values["snapstate"] = "prepare"
    section.values["snaptime"] = str(int(now))
    config.current.values["lock"] = "snapshot"
    config.snapshots[name] = section
    return section


def commit(config: ContainerConfig, name: str) -> None:
    """The volumes hold the snapshot: drop its state and the lock; the current state descends from it."""
    if config.current.values.get("lock") != "snapshot":
        raise InvalidState(f"container {config.ctid}: missing snapshot lock")
    section = snapshot_of(config, name)
    if section.values.get("snapstate") != "prepare":
        raise InvalidState(f"snapshot '{name}' of container {config.ctid}: wrong snapshot state")
    del section.values["snapstate"]
    del config.current.values["lock"]
    config.current.values["parent"] = name


# ---- delete: mark, remove volume by volume, clean up ----------------------------------------------
def mark_delete(config: ContainerConfig, name: str, lock: str = "snapshot-delete") -> ConfigSection:
    """Lock ``snapshot-delete`` (or keep the ``snapshot`` lock of a create being undone) and mark the section."""
    section = snapshot_of(config, name)
    if lock == "snapshot-delete":
        check_unlocked(config)
        config.current.values["lock"] = lock
    elif config.current.values.get("lock") != lock:
        raise InvalidState(f"container {config.ctid}: encountered invalid lock, expected '{lock}'")
    section.values["snapstate"] = "delete"
    return section


def remove_drive(config: ContainerConfig, name: str, key: str) -> None:
    """A volume's snapshot is gone: the section forgets the mount and keeps the volume as unused."""
    section = snapshot_of(config, name)
    volids = dict(storage_volumes(section))
    section.values.pop(key, None)
    if key in volids:
        add_unused(section, volids[key])


def finish_delete(config: ContainerConfig, name: str, volids: list[str]) -> None:
    """Drop the section, relink children to its parent, unlock; volumes it alone used stay as unused."""
    section = snapshot_of(config, name)
    parent = section.values.get("parent")
    for other in [config.current, *(s for n, s in config.snapshots.items() if n != name)]:
        if other.values.get("parent") == name:
            if parent:
                other.values["parent"] = parent
            else:
                del other.values["parent"]
    del config.snapshots[name]
    config.current.values.pop("lock", None)
    used = {volid for _, volid in storage_volumes(config.current)}
    for volid in volids:
        if volid not in used:
            add_unused(config.current, volid)


# ---- rollback: lock, volumes, apply ---------------------------------------------------------------
def rollback_prepare(config: ContainerConfig, name: str) -> ConfigSection:
    section = snapshot_of(config, name)
    if section.values.get("snapstate"):
        raise InvalidState(f"unable to rollback to incomplete snapshot (snapstate = {section.values['snapstate']})")
    check_unlocked(config)
    config.current.values["lock"] = "rollback"
    return section


def rollback_apply(config: ContainerConfig, name: str) -> None:
    """The current config becomes the snapshot's; its description and unused volumes stay, and volumes the
    snapshot does not mount join them; pending changes are dropped."""
    section = snapshot_of(config, name)
    if config.current.values.get("lock") != "rollback":
        raise InvalidState(f"container {config.ctid}: got wrong lock")
    current = config.current
    kept = {v for _, v in storage_volumes(section)}
    new = copy_section(section, current.description)
    # Unused volumes stay, but not one the snapshot mounts again (a replaced container's old root, kept unused).
    new.values.update({k: v for k, v in current.values.items() if _is_unused(k) and v not in kept})
    for _, volid in storage_volumes(current):
        if volid not in kept:
            add_unused(new, volid)
    new.values["parent"] = name
    config.current = new
    config.pending = None
