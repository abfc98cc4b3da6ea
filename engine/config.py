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

import re
from dataclasses import dataclass, field
from pathlib import Path

# The file writers and the value checks and schema live in their own modules; these names stay importable
# from here, where the rest of the code has always found them.
from engine.atomic import write_atomic, write_atomic_many
from engine.config_schema import (
    DEFAULTS,
    ENV_RAW_KEY,
    MAX_DEVICES,
    MAX_UNUSED,
    OSTYPES,
    PENDING,
    READ_LENIENT,
    SCHEMA,
    SUPPORTED_RAW_KEYS,
    _is_unused,
    _parser,
)
from engine.config_values import (
    BOUNDS,
    MAX_CTID,
    MIN_CTID,
    STORAGE_ID_RE,
    check_hostname,
    check_mount_path,
    parse_ctid,
    parse_property_string,
    parse_size,
)
from engine.errors import ValidationError

__all__ = [
    "BOUNDS",
    "MAX_CTID",
    "MAX_DEVICES",
    "MAX_UNUSED",
    "MIN_CTID",
    "OSTYPES",
    "SCHEMA",
    "STORAGE_ID_RE",
    "ConfigSection",
    "ContainerConfig",
    "_is_unused",
    "check_hostname",
    "check_mount_path",
    "decode_text",
    "encode_text",
    "parse_ctid",
    "parse_property_string",
    "parse_size",
    "read_config",
    "write_atomic",
    "write_atomic_many",
    "write_config",
]


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


def write_config(path: Path, config: ContainerConfig) -> None:
    # Re-parse what we are about to write: a file Caisson writes must be one it can read.
    text = config.render()
    ContainerConfig.parse(config.ctid, text, origin=str(path))
    write_atomic(path, text)
