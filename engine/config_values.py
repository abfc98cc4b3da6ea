"""The value checks of a container's config keys: each takes (raw value, key) and returns the typed value.

They raise ValidationError naming the key, so the message tells the user which setting is wrong.  The
schema that maps keys to these checks is :mod:`engine.config_schema`; the file format is
:mod:`engine.config`.  The web tier's forms import the ranges (``BOUNDS``) and checks from here rather
than restate them.
"""

from __future__ import annotations

import re
from collections.abc import Callable

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


_FSTYPE = re.compile(r"^[a-z0-9][a-z0-9_.]{0,31}$")


def _fstypes(value: str, key: str) -> str:
    """``mount=nfs;cifs``: file system types the container may mount (Proxmox's ``features: mount=``)."""
    for name in value.split(";"):
        if not _FSTYPE.match(name):
            raise ValidationError(f"{key}: '{name}' is not a file system type (as in 'nfs;cifs')", key=key)
    return value


def _dev_path(value: str, key: str) -> str:
    parts = value.split("/")
    if not value.startswith("/dev/") or ".." in parts or "" in parts[1:] or any(ord(c) < 33 for c in value):
        raise ValidationError(f"{key}: '{value}' is not a path below /dev (no '..', no empty parts)", key=key)
    return value


def _octal_mode(value: str, key: str) -> int:
    if not re.match(r"^0?[0-7]{3}$", value):
        raise ValidationError(f"{key}: '{value}' is not an octal access mode like 0660", key=key)
    return int(value, 8)


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
