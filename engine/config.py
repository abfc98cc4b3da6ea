"""Container configuration in Proxmox's ``pct`` syntax.

A config file holds ``key: value`` lines, the description as leading ``#``
comment lines, raw ``lxc.*`` keys (repeatable), and snapshot sections
``[name]`` that the storage layer owns.  Every value is checked against a
schema on parse and on ``set``; a bad key or value raises ValidationError
naming the key, so a file Caisson writes is always one Caisson can read.

Writes are atomic: a temporary file in the same directory, fsync, rename,
then fsync of the directory, so a crash leaves the old file or the new one,
never a torn one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import ValidationError

MIN_CTID = 100
MAX_CTID = 999_999_999

# The numeric ranges of the keys a user sets, named once: the schema below checks with them, and the web
# tier's forms and serializers import them rather than restate them.
BOUNDS: dict[str, tuple[int | float, int | float]] = {
    "ctid": (MIN_CTID, MAX_CTID),
    "cores": (1, 8192),
    "cpulimit": (0, 8192),
    "cpuunits": (0, 500_000),
    "memory": (16, 1 << 30),  # MiB
    "swap": (0, 1 << 30),  # MiB
    "tag": (1, 4094),  # a NIC's VLAN tag
}

HOSTNAME_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
MAC_RE = re.compile(r"^[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}$")
SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]?)$")
STORAGE_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9\-_.]*$")


def parse_ctid(value: str | int) -> int:
    """A container ID: an integer from 100 up, as Proxmox's VMIDs."""
    text = str(value).strip()
    if not text.isdigit():
        raise ValidationError(f"container ID '{value}' is not a number", key="vmid")
    ctid = int(text)
    if not MIN_CTID <= ctid <= MAX_CTID:
        raise ValidationError(f"container ID {ctid} is outside {MIN_CTID}..{MAX_CTID}", key="vmid")
    return ctid


def check_hostname(value: str, key: str = "hostname") -> str:
    """An RFC 1123 host name: ASCII labels of at most 63 characters, 253 in all."""
    if not value:
        raise ValidationError(f"{key}: must not be empty", key=key)
    if len(value) > 253:
        raise ValidationError(f"{key}: longer than 253 characters", key=key)
    for label in value.split("."):
        if not HOSTNAME_LABEL.match(label):
            raise ValidationError(
                f"{key}: '{value}' is not a valid host name (letters, digits and '-' in "
                "labels of 1 to 63 characters, not starting or ending with '-')",
                key=key,
            )
    return value


def parse_size(value: str, key: str) -> int:
    """A disk size like ``8G`` or ``512M`` (Proxmox's DiskSize); returns bytes."""
    m = SIZE_RE.match(value.strip())
    if not m:
        raise ValidationError(f"{key}: size '{value}' is not a number with an optional K/M/G/T unit", key=key)
    factor = {"": 1 << 30, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m.group(2)]
    return int(float(m.group(1)) * factor)


def _int(lo: int, hi: int) -> Callable[[str, str], int]:
    def parse(value: str, key: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValidationError(f"{key}: '{value}' is not an integer", key=key) from None
        if not lo <= number <= hi:
            raise ValidationError(f"{key}: {number} is outside {lo}..{hi}", key=key)
        return number

    return parse


def _float(lo: float, hi: float) -> Callable[[str, str], float]:
    def parse(value: str, key: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ValidationError(f"{key}: '{value}' is not a number", key=key) from None
        if not lo <= number <= hi or number != number:
            raise ValidationError(f"{key}: {value} is outside {lo:g}..{hi:g}", key=key)
        return number

    return parse


def _bool(value: str, key: str) -> bool:
    if value not in ("0", "1"):
        raise ValidationError(f"{key}: '{value}' must be 0 or 1", key=key)
    return value == "1"


def _enum(*choices: str) -> Callable[[str, str], str]:
    def parse(value: str, key: str) -> str:
        if value not in choices:
            raise ValidationError(f"{key}: '{value}' is not one of {', '.join(choices)}", key=key)
        return value

    return parse


_CPU_LIST = re.compile(r"\d{1,4}(-\d{1,4})?(,\d{1,4}(-\d{1,4})?)*")


def _cpu_list(value: str, key: str) -> str:
    """A CPU list as the kernel's cpuset takes it (``0-1,3``), ranges in order."""
    if not _CPU_LIST.fullmatch(value):
        raise ValidationError(f"{key}: '{value}' is not a CPU list like '0-1,3'", key=key)
    for part in value.split(","):
        lo, _, hi = part.partition("-")
        if hi and int(hi) < int(lo):
            raise ValidationError(f"{key}: range '{part}' runs backwards", key=key)
    return value


def _text(value: str, key: str) -> str:
    if any(ord(c) < 32 for c in value):
        raise ValidationError(f"{key}: control characters are not allowed", key=key)
    return value


def parse_property_string(
    value: str, key: str, schema: dict[str, Callable[[str, str], object]], default_key: str | None = None
) -> dict[str, object]:
    """Parse Proxmox's ``a=1,b=x`` property strings against a per-property schema."""
    result: dict[str, object] = {}
    for index, part in enumerate(p for p in value.split(",") if p != ""):
        if "=" in part:
            name, _, raw = part.partition("=")
        elif index == 0 and default_key:
            name, raw = default_key, part
        else:
            raise ValidationError(f"{key}: '{part}' is not of the form name=value", key=key)
        if name not in schema:
            raise ValidationError(f"{key}: unknown property '{name}' (known: {', '.join(sorted(schema))})", key=key)
        if name in result:
            raise ValidationError(f"{key}: property '{name}' given twice", key=key)
        try:
            result[name] = schema[name](raw, f"{key}.{name}")
        except ValidationError as exc:
            raise ValidationError(str(exc), key=key) from None
    return result


def _volume(value: str, key: str) -> str:
    if value.startswith("/") and key.split(".")[0].startswith("mp"):
        # A bind mount of a host path (Proxmox's mpN: /host/dir,mp=/dir): for administrators only.
        parts = value.split("/")
        if ".." in parts or "\x00" in value or value.rstrip("/") == "" or any(ord(c) < 32 for c in value):
            raise ValidationError(f"{key}: host path '{value}' must be absolute, without '..', and not '/'", key=key)
        return value
    storage, sep, volname = value.partition(":")
    if not sep or not STORAGE_ID_RE.match(storage) or not volname:
        raise ValidationError(f"{key}: volume '{value}' must be <storage>:<volume name>", key=key)
    if volname.startswith("/") or ".." in volname.split("/") or "\x00" in volname:
        raise ValidationError(f"{key}: volume name '{volname}' must stay inside storage '{storage}'", key=key)
    return value


def _mac(value: str, key: str) -> str:
    if not MAC_RE.match(value):
        raise ValidationError(f"{key}: '{value}' is not a MAC address like BC:24:11:00:00:01", key=key)
    if int(value[:2], 16) & 1:
        raise ValidationError(f"{key}: '{value}' is a multicast address", key=key)
    return value.upper()


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
_FSTYPE = re.compile(r"^[a-z0-9][a-z0-9_.]{0,31}$")


def _fstypes(value: str, key: str) -> str:
    """``mount=nfs;cifs``: file system types the container may mount (Proxmox's ``features: mount=``)."""
    for name in value.split(";"):
        if not _FSTYPE.match(name):
            raise ValidationError(f"{key}: '{name}' is not a file system type (as in 'nfs;cifs')", key=key)
    return value


FEATURES_SCHEMA = {
    "nesting": _bool,
    "keyctl": _bool,
    "fuse": _bool,
    "mknod": _bool,
    "force_rw_sys": _bool,
    "mount": _fstypes,
}
MAX_DEVICES = 256  # dev0 … dev255, as Proxmox


def _dev_path(value: str, key: str) -> str:
    parts = value.split("/")
    if not value.startswith("/dev/") or ".." in parts or "" in parts[1:] or any(ord(c) < 33 for c in value):
        raise ValidationError(f"{key}: '{value}' is not a path below /dev (no '..', no empty parts)", key=key)
    return value


def _octal_mode(value: str, key: str) -> int:
    if not re.match(r"^0?[0-7]{3}$", value):
        raise ValidationError(f"{key}: '{value}' is not an octal access mode like 0660", key=key)
    return int(value, 8)


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


_SNIPPET = re.compile(r"^([A-Za-z][A-Za-z0-9\-_.]*):snippets/([A-Za-z0-9][A-Za-z0-9_.\-]*)$")


def _hookscript(value: str, key: str) -> str:
    """``<storage>:snippets/<file>``: an executable on a storage holding snippets (Proxmox's hookscript)."""
    if not _SNIPPET.match(value):
        raise ValidationError(f"{key}: '{value}' is not a snippet volume like 'local:snippets/hook.sh'", key=key)
    return value


_ZONE = re.compile(r"^[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*$")


def _timezone(value: str, key: str) -> str:
    """``host`` or a zone name of /usr/share/zoneinfo (``Europe/Vienna``); applied at start."""
    if value != "host" and (not _ZONE.match(value) or len(value) > 64):
        raise ValidationError(f"{key}: '{value}' is not 'host' or a time zone name like Europe/Vienna", key=key)
    return value


# Proxmox's ostype values for a distribution it sets up (``unmanaged``: it leaves the container's files alone).
OSTYPES = ("debian", "devuan", "ubuntu", "centos", "fedora", "opensuse", "archlinux", "alpine", "gentoo", "nixos")
STARTUP_SCHEMA = {"order": _int(0, 1 << 31), "up": _int(0, 1 << 31), "down": _int(0, 1 << 31)}


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_ENV_VAR = re.compile(r"^\w+=[^\x00-\x08\x0a-\x1f\x7f]*$")


def _entrypoint(value: str, key: str) -> str:
    if not value or _CONTROL.search(value):
        raise ValidationError(f"{key}: a command without control characters is required", key=key)
    return value


def _env(value: str, key: str) -> str:
    for variable in value.split("\0"):
        if variable and not _ENV_VAR.match(variable):
            raise ValidationError(f"{key}: '{variable[:40]}' is not NAME=value without control characters", key=key)
    return value


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


FORBIDDEN_MOUNT_PATHS = ("/proc", "/sys", "/dev")


def check_mount_path(path: str, key: str) -> str:
    """A mount point inside the container: absolute, no '..', not '/' and not over /proc, /sys or /dev."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not path.startswith("/") or ".." in path.split("/") or not parts:
        raise ValidationError(
            f"{key}: mount path '{path}' must be an absolute path inside the container, without '..' and not '/'",
            key=key,
        )
    normal = "/" + "/".join(parts)
    for forbidden in FORBIDDEN_MOUNT_PATHS:
        if normal == forbidden or normal.startswith(forbidden + "/"):
            raise ValidationError(
                f"{key}: mount path '{path}' is over {forbidden}, which the engine mounts itself", key=key
            )
    return normal


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


@dataclass
class ConfigSection:
    """One block of key/value settings: the current config or one snapshot."""

    values: dict[str, str] = field(default_factory=dict)
    raw: list[tuple[str, str]] = field(default_factory=list)
    description: str = ""

    def get(self, key: str):
        """The typed value of a key, or its default."""
        if key == "description":
            return self.description
        if key == "env":  # as Proxmox: the lxc.environment.runtime lines, NUL-separated
            return "\0".join(self.raw_values(ENV_RAW_KEY)) or None
        if key in self.values:
            return _parser(key, False)(self.values[key], key)
        return DEFAULTS.get(key)

    def set(self, key: str, value: str) -> None:
        if key == "description":
            if "\x00" in value:
                raise ValidationError("description: NUL characters are not allowed", key=key)
            self.description = value
            return
        value = str(value).strip()
        _parser(key, False)(value, key)
        if key == "env":
            self.raw[:] = [(k, v) for k, v in self.raw if k != ENV_RAW_KEY]
            self.raw.extend((ENV_RAW_KEY, v) for v in value.split("\0") if v)
            return
        self.values[key] = value

    def delete(self, key: str) -> None:
        if key == "description":
            self.description = ""
        elif key == "env":
            self.raw[:] = [(k, v) for k, v in self.raw if k != ENV_RAW_KEY]
        elif key not in SCHEMA and not _is_unused(key):
            raise ValidationError(f"unknown configuration key '{key}'", key=key)
        else:
            self.values.pop(key, None)

    def raw_values(self, key: str) -> list[str]:
        return [v for k, v in self.raw if k == key]


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


@dataclass
class ContainerConfig:
    """A container's whole config file: the current section plus snapshot sections."""

    ctid: int
    current: ConfigSection = field(default_factory=ConfigSection)
    snapshots: dict[str, ConfigSection] = field(default_factory=dict)
    pending: ConfigSection | None = None  # [pve:pending]: kept and written back as found

    # Convenience accessors for the current section.
    def get(self, key: str):
        return self.current.get(key)

    def set(self, key: str, value: str) -> None:
        self.current.set(key, value)

    @property
    def hostname(self) -> str:
        return self.current.get("hostname") or f"CT{self.ctid}"

    @property
    def unprivileged(self) -> bool:
        return bool(self.current.get("unprivileged"))

    def feature(self, name: str) -> bool:
        return bool(self.current.get("features").get(name, False))

    # Serialisation: Proxmox's parse_pct_config/write_pct_config, so a Proxmox file round-trips byte for byte.
    @classmethod
    def parse(cls, ctid: int, text: str, origin: str = "config") -> ContainerConfig:
        """Every ``#`` line of a section, wherever it stands, joins that section's description (as in
        Proxmox, which writes them back together before the first key)."""
        config = cls(ctid)
        section, kind = config.current, "current"
        description = ""
        for lineno, line in enumerate(text.split("\n"), 1):
            where = f"{origin} line {lineno}"
            if not line.strip():
                continue
            if line.startswith("["):
                if not line.rstrip().endswith("]"):
                    raise ValidationError(f"{where}: malformed section header '{line}'")
                name = line.strip()[1:-1]
                section.description = _description(description)
                description = ""
                if name.lower() == PENDING:
                    if config.pending is not None:
                        raise ValidationError(f"{where}: section [{PENDING}] appears twice")
                    section = config.pending = ConfigSection()
                    kind = "pending"
                    continue
                _check_snapshot_name(name, where)
                if name in config.snapshots:
                    raise ValidationError(f"{where}: snapshot section [{name}] appears twice")
                section = config.snapshots[name] = ConfigSection()
                kind = "snapshot"
                continue
            if line.startswith("#"):
                description += decode_text(line[1:]) + "\n"
                continue
            key, sep, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if not sep or not key:
                raise ValidationError(f"{where}: expected 'key: value', got '{line}'")
            if key.startswith("lxc."):
                if key not in SUPPORTED_RAW_KEYS:
                    raise ValidationError(
                        f"{where}: raw key '{key}' is not supported (supported: "
                        f"{', '.join(sorted(SUPPORTED_RAW_KEYS))})",
                        key=key,
                    )
                section.raw.append((key, value))
                continue
            if key == "description":
                description += decode_text(value)  # Proxmox adds no line break after this form
                continue
            if key in section.values:
                raise ValidationError(f"{where}: key '{key}' appears twice", key=key)
            try:
                (READ_LENIENT.get(key) or _parser(key, kind == "snapshot", kind == "pending"))(value, key)
            except ValidationError as exc:
                raise ValidationError(f"{where}: {exc}", key=exc.key) from None
            section.values[key] = value
        section.description = _description(description)
        return config

    def render(self) -> str:
        """Sections in Proxmox's order (current, pending, snapshots by name), keys sorted as strings."""
        used = {
            v.partition(",")[0].removeprefix("volume=")
            for k, v in self.current.values.items()
            if k == "rootfs" or (k.startswith("mp") and k[2:].isdigit())
        }
        text = _render_section(self.current, skip=lambda k, v: _is_unused(k) and v in used)
        pending = self.pending
        if pending is not None and (pending.values or pending.raw or pending.description):
            text += f"\n[{PENDING}]\n" + _render_section(pending)
        for name in sorted(self.snapshots):
            text += f"\n[{name}]\n" + _render_section(self.snapshots[name])
        return text

    def digest(self) -> str:
        """SHA-1 of the file as written: Proxmox's digest of the same file, to detect concurrent edits."""
        import hashlib  # only edits with a digest need it; keep the CLI's start-up light

        return hashlib.sha1(self.render().encode()).hexdigest()


def _render_section(section: ConfigSection, skip=lambda key, value: False) -> str:
    out = ["#" + encode_text(line) for line in _perl_lines(section.description)]
    out += [f"{key}: {value}" for key, value in sorted(section.values.items()) if not skip(key, value)]
    # as Proxmox's writer: the environment (its ``env``) first, then the other raw keys in their order
    out += [f"{key}: {value}" for key, value in section.raw if key == ENV_RAW_KEY]
    out += [f"{key}: {value}" for key, value in section.raw if key != ENV_RAW_KEY]
    return "".join(line + "\n" for line in out)


def _perl_lines(text: str) -> list[str]:
    """Perl's split(/\\n/): trailing empty lines vanish, leading and inner ones stay."""
    lines = text.split("\n") if text else []
    while lines and lines[-1] == "":
        lines.pop()
    return lines


def _description(text: str) -> str:
    return text.rstrip("\n")  # what Proxmox renders is the same with or without trailing newlines


# Comment lines carry UTF-8 bytes outside 0x20-0x7e, '%' and ':' as %XX (Proxmox's encode_text).
_TEXT_SAFE = frozenset(range(0x20, 0x7F)) - {0x25, 0x3A}


def encode_text(line: str) -> str:
    return "".join(chr(b) if b in _TEXT_SAFE else f"%{b:02X}" for b in line.encode("utf-8", "surrogatepass"))


def decode_text(text: str) -> str:
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(text).decode("utf-8", "replace")


def _check_snapshot_name(name: str, where: str) -> None:
    if not re.match(r"^[A-Za-z][A-Za-z0-9_\-]{0,39}$", name) or name == "current":
        raise ValidationError(
            f"{where}: snapshot name '{name}' must start with a letter and hold only letters, "
            "digits, '-' and '_' (at most 40)"
        )


def read_config(path: Path, ctid: int) -> ContainerConfig:
    try:
        text = path.read_text()
    except FileNotFoundError:
        from engine.errors import NotFound

        raise NotFound(f"container {ctid} does not exist (no {path})") from None
    return ContainerConfig.parse(ctid, text, origin=str(path))


def write_atomic(path: Path, data: str | bytes, mode: int = 0o640, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file, never a torn one.

    ``durable=False`` skips the fsyncs, for caches that need only atomicity (run records on tmpfs).
    """
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.parent / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if not durable:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_atomic_many(items: list[tuple[Path, str]], mode: int = 0o640) -> None:
    """Replace each ``(path, data)`` as :func:`write_atomic` does, the files' flushes issued together.

    Each file is replaced atomically and all are durable on return, as with one ``write_atomic`` each; but
    the data flushes run at the same time, then the renames' directory flushes do, so a journaling file
    system (ext4, xfs) commits them in one or two journal transactions instead of one per ``fsync``: the
    cost of a snapshot of an overlay volume was mostly these flushes.  On failure no temporary file stays;
    files already renamed stay replaced (the caller undoes, as after a ``write_atomic`` that succeeded).
    """
    from concurrent.futures import ThreadPoolExecutor

    staged: list[tuple[Path, Path, int]] = []
    try:
        for path, data in items:
            tmp = path.parent / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
            staged.append((tmp, path, fd))
            os.fchmod(fd, mode)
            payload = data.encode()
            while payload:
                payload = payload[os.write(fd, payload) :]
        with ThreadPoolExecutor(max_workers=len(staged) or 1) as pool:
            list(pool.map(os.fsync, [fd for _, _, fd in staged]))
            for tmp, path, _ in staged:
                os.rename(tmp, path)
            dirs = [os.open(d, os.O_RDONLY | os.O_DIRECTORY) for d in {p.parent for _, p, _ in staged}]
            try:
                list(pool.map(os.fsync, dirs))
            finally:
                for fd in dirs:
                    os.close(fd)
    finally:
        for tmp, _, fd in staged:
            os.close(fd)
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


def write_config(path: Path, config: ContainerConfig) -> None:
    # Re-parse what we are about to write: a file Caisson writes must be one it can read.
    text = config.render()
    ContainerConfig.parse(config.ctid, text, origin=str(path))
    write_atomic(path, text)
