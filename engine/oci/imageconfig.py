"""An OCI image's config mapped onto a container's, key for key as Proxmox VE 9.1 maps it
(pve-container's ``restore_oci_archive``), so a container made from the same archive here or there has
the same config:

=================  ===============================================================================
image config       container config
=================  ===============================================================================
Entrypoint + Cmd   ``entrypoint`` (shell-quoted) unless it is ``/sbin/init``; then also ``cmode:
                   console`` and ``host-managed=1`` on every ``netN`` that does not say otherwise
Env                ``env`` (written as ``lxc.environment.runtime`` lines)
User               ``lxc.init.uid``, ``lxc.init.gid``, ``lxc.init.groups`` (names looked up in the
                   image's /etc/passwd and /etc/group)
WorkingDir         ``lxc.init.cwd``
StopSignal         ``lxc.signal.halt`` (SIGTERM when unset; a system image without one keeps its
                   init's power-off signal)
Volumes            directories made in the rootfs (no mount point is made up: no size, no storage)
=================  ===============================================================================

Every value is untrusted: a control character anywhere is refused, naming the key.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from engine.config import ContainerConfig
from engine.errors import ValidationError

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
SYSTEM_INIT = "/sbin/init"


@dataclass
class ImageConfig:
    """The part of an image config a container takes, checked."""

    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    user: str = ""
    workdir: str = ""
    stop_signal: str = ""
    volumes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, image_config: dict) -> ImageConfig:
        raw = image_config.get("config") or {}
        if not isinstance(raw, dict):
            raise ValidationError("the image config's 'config' is not an object")
        volumes = raw.get("Volumes") or {}
        if not isinstance(volumes, dict):
            raise ValidationError("the image config's Volumes is not an object")
        return cls(
            entrypoint=_strings(raw, "Entrypoint"),
            cmd=_strings(raw, "Cmd"),
            env=_strings(raw, "Env"),
            user=_string(raw, "User"),
            workdir=_string(raw, "WorkingDir"),
            stop_signal=_string(raw, "StopSignal"),
            volumes=[_checked(v, "Volumes") for v in volumes],
        )

    @property
    def command(self) -> list[str]:
        return [*self.entrypoint, *self.cmd]

    @property
    def is_application(self) -> bool:
        """An application image: its command is not an init (a system image runs /sbin/init)."""
        return bool(self.command) and self.command[0] != SYSTEM_INIT


def _checked(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"OCI config value for '{key}' is not a string", key=key)
    if _CONTROL.search(value):
        raise ValidationError(f"OCI config value for '{key}' contains forbidden control characters", key=key)
    return value


def _string(raw: dict, key: str) -> str:
    value = raw.get(key)
    return "" if value is None else _checked(value, key)


def _strings(raw: dict, key: str) -> list[str]:
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValidationError(f"OCI config value for '{key}' is not a list", key=key)
    return [_checked(v, key) for v in value]


def apply(image: ImageConfig, config: ContainerConfig, rootfs: Path, owner: tuple[int, int]) -> list[str]:
    """Set ``config`` from the image and make its volume directories in ``rootfs`` (owned by ``owner``,
    the container's root); returns what was done, for the task log."""
    from engine.distro.files import Root

    notes = []
    section = config.current
    with Root(rootfs, owner) as root:
        for path in image.volumes:
            root.make_dir(path.lstrip("/"))
            notes.append(f"volume directory {path}")
        root.commit()
        uid, gid, groups = resolve_user(image.user, root) if image.user else (None, None, None)
    if image.is_application:
        section.values["entrypoint"] = shlex.join(image.command)
        section.values["cmode"] = "console"
        for key in sorted(k for k in section.values if k.startswith("net") and k[3:].isdigit()):
            if "host-managed=" not in section.values[key]:
                section.values[key] += ",host-managed=1"
        notes.append(f"entrypoint {section.values['entrypoint']}")
    raw = [(k, v) for k, v in section.raw if not k.startswith(("lxc.init.", "lxc.signal.halt"))]
    for key, value in (("lxc.init.uid", uid), ("lxc.init.gid", gid), ("lxc.init.groups", groups)):
        if value is not None and value != "":
            raw.append((key, str(value)))
    if image.workdir:
        raw.append(("lxc.init.cwd", image.workdir))
    if image.stop_signal or image.is_application:
        raw.append(("lxc.signal.halt", image.stop_signal or "SIGTERM"))
    section.raw[:] = raw
    if image.env:
        config.set("env", "\0".join(image.env))
    return notes


def resolve_user(user: str, root) -> tuple[int | None, int | None, str | None]:
    """``user[:group]`` (names or numbers) to uid, gid and supplementary groups, from the image's files."""
    match = re.fullmatch(r"([^:]+)(?::([^:]+))?", user)
    if not match:
        raise ValidationError(f"OCI config value for 'User' has an invalid format: {user!r}", key="User")
    name, group = match.groups()
    passwd = [line.split(":") for line in (root.read("etc/passwd") or "").splitlines()]
    groups_file = [line.split(":") for line in (root.read("etc/group") or "").splitlines()]

    def look(rows, match_index, value, ret_index):
        return next(
            (r[ret_index] for r in rows if len(r) > max(match_index, ret_index) and r[match_index] == value), None
        )

    if name.isdigit():
        uid, username = int(name), look(passwd, 2, name, 0)
    else:
        username, found = name, look(passwd, 0, name, 2)
        if found is None or not found.isdigit():
            raise ValidationError(f"OCI config User {name!r} is not in the image's /etc/passwd", key="User")
        uid = int(found)
    gid: int | None = None
    groups = None
    if group is not None:
        found = group if group.isdigit() else look(groups_file, 0, group, 2)
        if found is None or not found.isdigit():
            raise ValidationError(f"OCI config group {group!r} is not in the image's /etc/group", key="User")
        gid = int(found)
    else:
        found = look(passwd, 2, str(uid), 3)
        gid = int(found) if found and found.isdigit() else None
        if username is not None:
            groups = ",".join(r[2] for r in groups_file if len(r) > 3 and username in r[3].split(","))
    return uid, gid, groups
