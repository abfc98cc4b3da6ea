"""The schema of a container's config file: which keys exist, which check each value, and their defaults.

Proxmox's ``pct`` keys, its property strings (``rootfs``, ``mpN``, ``netN``, ``devN``, ``features``), the
keys only snapshot and pending sections hold, and the raw ``lxc.*`` keys Caisson honours.  The checks
themselves live in :mod:`engine.config_values`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from engine.config_values import (
    BOUNDS,
    _bool,
    _cpu_list,
    _dev_path,
    _entrypoint,
    _enum,
    _env,
    _float,
    _fstypes,
    _hookscript,
    _int,
    _mac,
    _octal_mode,
    _text,
    _timezone,
    _volume,
    check_hostname,
    check_mount_path,
    parse_property_string,
    parse_size,
)
from engine.errors import ValidationError

ROOTFS_SCHEMA = {
    "volume": _volume,
    "size": lambda v, k: parse_size(v, k),
    "acl": _bool,
    "quota": _bool,
    "replicate": _bool,
    "ro": _bool,
    "shared": _bool,
    "mountoptions": _text,
}
MP_SCHEMA = {**ROOTFS_SCHEMA, "mp": _text, "backup": _bool}
NET_SCHEMA = {
    "name": _text,
    "bridge": _text,
    "firewall": _bool,
    "gw": _text,
    "gw6": _text,
    "hwaddr": _mac,
    "ip": _text,
    "ip6": _text,
    "link_down": _bool,
    "host-managed": _bool,  # Proxmox 9.1: the host, not the container, sets the addresses (app containers)
    "mtu": _int(64, 65520),
    "rate": _float(0, 1e9),
    "tag": _int(*BOUNDS["tag"]),
    "trunks": _text,
    "type": _enum("veth"),
}

FEATURES_SCHEMA = {
    "nesting": _bool,
    "keyctl": _bool,
    "fuse": _bool,
    "mknod": _bool,
    "force_rw_sys": _bool,
    "mount": _fstypes,
}
MAX_DEVICES = 256  # dev0 … dev255, as Proxmox


DEV_SCHEMA = {
    "path": _dev_path,
    "uid": _int(0, (1 << 32) - 2),
    "gid": _int(0, (1 << 32) - 2),
    "mode": _octal_mode,
    "deny-write": _bool,
}


def _dev(value: str, key: str) -> dict:
    props = parse_property_string(value, key, DEV_SCHEMA, "path")
    if "path" not in props:
        raise ValidationError(f"{key}: a device path is required", key=key)
    return props


OSTYPES = ("debian", "devuan", "ubuntu", "centos", "fedora", "opensuse", "archlinux", "alpine", "gentoo", "nixos")
STARTUP_SCHEMA = {"order": _int(0, 1 << 31), "up": _int(0, 1 << 31), "down": _int(0, 1 << 31)}


def _props(schema, default_key=None):
    def parse(value: str, key: str) -> dict:
        return parse_property_string(value, key, schema, default_key)

    return parse


def _net(value: str, key: str) -> dict:
    props = parse_property_string(value, key, NET_SCHEMA)
    if "name" not in props:
        raise ValidationError(f"{key}: the property 'name' (interface name inside the container) is required", key=key)
    return props


def _rootfs(value: str, key: str) -> dict:
    props = parse_property_string(value, key, ROOTFS_SCHEMA if key == "rootfs" else MP_SCHEMA, "volume")
    if "volume" not in props:
        raise ValidationError(f"{key}: a volume is required", key=key)
    if key != "rootfs":
        if "mp" not in props:
            raise ValidationError(f"{key}: the mount path 'mp' is required", key=key)
        check_mount_path(str(props["mp"]), key)
    return props


# key -> parser.  Parsers take (raw value, key) and return the typed value.
SCHEMA: dict[str, Callable[[str, str], object]] = {
    "arch": _enum("amd64", "i386", "arm64", "armhf", "riscv32", "riscv64"),
    "hostname": lambda v, k: check_hostname(v, k),
    "cores": _int(*BOUNDS["cores"]),
    "cpulimit": _float(*BOUNDS["cpulimit"]),
    "cpuunits": _int(*BOUNDS["cpuunits"]),
    "memory": _int(*BOUNDS["memory"]),
    "swap": _int(*BOUNDS["swap"]),
    "pids": _int(0, 1 << 22),  # Caisson extension: maximum number of tasks (0 = unlimited)
    "ioweight": _int(0, 10_000),  # Caisson extension: block I/O weight (0 = kernel default)
    # Caisson extension: start the container again when it stops by itself (an application's PID 1 exiting);
    # on-failure: only when it ended with an error or a signal (engine.oci.restart)
    "restart": _enum("no", "always", "on-failure"),
    "cpuset": _cpu_list,  # Caisson extension: the host CPUs it runs on (else `cores` of them, picked by ID)
    "rootfs": _rootfs,
    "unprivileged": _bool,
    "features": _props(FEATURES_SCHEMA),
    "onboot": _bool,
    "startup": _props(STARTUP_SCHEMA, "order"),
    "description": lambda v, k: v,
    "ostype": _enum(*OSTYPES, "unmanaged"),
    "cmode": _enum("shell", "console", "tty"),
    # Proxmox 9.1's application containers (OCI images): the command run as PID 1, shell-quoted, and the
    # environment as NUL-separated NAME=value pairs, which the file holds as lxc.environment.runtime lines.
    "entrypoint": _entrypoint,
    "env": _env,
    "console": _bool,
    "tty": _int(0, 6),
    "nameserver": _text,
    "searchdomain": _text,
    "tags": _text,
    "timezone": _timezone,
    "hookscript": _hookscript,
    "protection": _bool,
    "template": _bool,
    "parent": _text,  # the snapshot the current state descends from (managed by the engine)
    "lock": _enum(
        "backup",
        "create",
        "destroyed",
        "disk",
        "fstrim",
        "migrate",
        "mounted",
        "rollback",
        "snapshot",
        "snapshot-delete",
    ),
}
for _n in range(10):
    SCHEMA[f"net{_n}"] = _net
for _n in range(256):
    SCHEMA[f"mp{_n}"] = _rootfs
for _n in range(MAX_DEVICES):
    SCHEMA[f"dev{_n}"] = _dev
# Keys only a snapshot section holds; ``vmstate`` (a QEMU RAM image, never made for containers) is kept as found.
SNAPSHOT_ONLY_KEYS = {"snaptime": _int(0, 1 << 62), "snapstate": _enum("prepare", "delete"), "vmstate": _text}
MAX_UNUSED = 256  # unused0 … unused255: volumes no longer mounted but kept, as Proxmox's unusedN
UNUSED_KEY = re.compile(r"^unused(\d{1,3})$")
PENDING = "pve:pending"  # Proxmox's section of changes waiting for a restart
# On read only, a value outside today's list is kept as found (Proxmox keeps it with a warning; its own test
# data says ``ostype: redhat``): ostype only labels the distribution, whose setup Caisson picks from the
# container's os-release.  ``set`` still refuses it by name.
_OSTYPE_WORD = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
READ_LENIENT = {"ostype": lambda v, k: v if _OSTYPE_WORD.match(v) else SCHEMA["ostype"](v, k)}
ENV_RAW_KEY = "lxc.environment.runtime"
# Raw LXC keys read and honoured; the lxc.init.* and lxc.signal.halt ones are what Proxmox 9.1 writes for
# an OCI image's User, WorkingDir and StopSignal.
SUPPORTED_RAW_KEYS = {
    "lxc.idmap",
    ENV_RAW_KEY,
    "lxc.init.uid",
    "lxc.init.gid",
    "lxc.init.groups",
    "lxc.init.cwd",
    "lxc.signal.halt",
}

DEFAULTS = {
    "arch": "amd64",
    "cores": None,
    "memory": 512,
    "swap": 512,
    "unprivileged": True,
    "onboot": False,
    "cpulimit": 0.0,
    "cpuunits": None,
    "pids": 0,
    "ioweight": 0,
    "features": {},
    "cmode": "tty",
    "tty": 2,
}


def _parser(key: str, in_snapshot: bool, in_pending: bool = False) -> Callable[[str, str], object]:
    if key in SCHEMA:
        return SCHEMA[key]
    if _is_unused(key):
        return _volume
    if in_snapshot and key in SNAPSHOT_ONLY_KEYS:
        return SNAPSHOT_ONLY_KEYS[key]
    if in_pending and key == "delete":
        return _pending_delete
    raise ValidationError(f"unknown configuration key '{key}'", key=key)


def _is_unused(key: str) -> bool:
    match = UNUSED_KEY.match(key)
    return bool(match) and int(match.group(1)) < MAX_UNUSED and str(int(match.group(1))) == match.group(1)


def _pending_delete(value: str, key: str) -> str:
    """The pending section's ``delete: a,!b`` list: keys to remove at the next restart (``!``: forced)."""
    for name in value.split(","):
        name = name.strip().removeprefix("!")
        if name and name != "description" and name not in SCHEMA and not _is_unused(name):
            raise ValidationError(f"{key}: unknown configuration key '{name}'", key=key)
    return value
