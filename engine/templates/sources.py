"""Template sources: one :class:`Source` class per kind of index, keyed by the ``type`` in ``sources.json``.

A kind (``aplinfo``: Proxmox/TurnKey's appliance index; ``simplestreams``: an
LXC image server) knows which files make its index, how to fetch and check
them, and how to read them into :class:`Entry` rows, each with its download
URL and checksum. The store only keeps the files and asks the kind; each
kind's module registers its class with :func:`register`, and importing
``engine.templates`` loads them all.
"""

from __future__ import annotations

import ipaddress
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, NamedTuple
from urllib.parse import urlsplit

from engine.errors import ValidationError
from engine.templates.entry import Entry

_SOURCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

# What a node offers before anyone edits its sources (as pveam's built-in list, plus the LXC image
# server): Proxmox's and TurnKey's appliance indexes, in the compressed form pveam fetches.
DEFAULT_SOURCES = [
    {"id": "pve", "type": "aplinfo", "url": "http://download.proxmox.com/images/aplinfo-pve-9.dat.gz"},
    {"id": "turnkey", "type": "aplinfo", "url": "https://releases.turnkeylinux.org/pve/aplinfo.dat.gz"},
    {"id": "lxc", "type": "simplestreams", "url": "https://images.linuxcontainers.org"},
]


def check_source_url(url: object, where: str) -> str:
    """http(s) with a host, and not a link-local address literal (names are checked again as they resolve,
    by :func:`engine.templates.download.check_url`)."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 2000:
        raise ValidationError(f"{where}: url must be http:// or https://", key="url")
    try:
        host = urlsplit(url).hostname
    except ValueError:
        host = None
    if not host or any(c.isspace() for c in url):
        raise ValidationError(f"{where}: url {url[:80]!r} has no valid host", key="url")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return url
    if address.is_link_local or address.is_unspecified or address.is_multicast:
        raise ValidationError(
            f"{where}: url {url[:80]!r}: {host} is a link-local, multicast or unspecified address", key="url"
        )
    return url


class Index(NamedTuple):
    """A freshly fetched index: its files as the store caches them, whether a signature was checked,
    and the entries they list (parsed before anything is cached, so a bad index never is)."""

    files: dict[str, bytes]
    trusted: bool
    entries: list[Entry]


@dataclass(frozen=True)
class Source(ABC):
    """One configured source. ``from_dict`` picks the class of its kind."""

    id: str
    url: str
    keyring: str | None = None
    enabled: bool = True

    type: ClassVar[str]

    @classmethod
    def from_dict(cls, data: object, where: str) -> Source:
        if not isinstance(data, dict):
            raise ValidationError(f"{where}: a source must be an object")
        sid, stype, url = data.get("id"), data.get("type"), data.get("url")
        if not isinstance(sid, str) or not _SOURCE_ID.fullmatch(sid):
            raise ValidationError(f"{where}: invalid source id {sid!r}", key="id")
        kind = _KINDS.get(stype) if isinstance(stype, str) else None
        if kind is None:
            raise ValidationError(f"{where}: type must be one of {', '.join(types())}", key="type")
        check_source_url(url, where)
        keyring = data.get("keyring")
        if keyring is not None and not (isinstance(keyring, str) and keyring.startswith("/")):
            raise ValidationError(f"{where}: keyring must be an absolute path", key="keyring")
        enabled = data.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ValidationError(f"{where}: enabled must be true or false", key="enabled")
        return kind(sid, url, keyring or None, enabled)

    def to_dict(self) -> dict:
        return {"id": self.id, "type": self.type, "url": self.url, "keyring": self.keyring, "enabled": self.enabled}

    @abstractmethod
    def fetch(self, max_bytes: int) -> Index:
        """Download the index (no file larger than ``max_bytes``, compressed or not), check it, parse it."""

    @abstractmethod
    def entries(self, read: Callable[[str], bytes]) -> list[Entry]:
        """The entries of an index whose files ``read(name)`` returns (those :meth:`fetch` gave)."""

    def news(self, read: Callable[[str], bytes]) -> list:
        """News records the index carries besides its templates (none unless the kind has them)."""
        return []


_KINDS: dict[str, type[Source]] = {}


def register(kind: type[Source]) -> type[Source]:
    """Class decorator: make ``kind`` the class for sources of type ``kind.type``."""
    _KINDS[kind.type] = kind
    return kind


def types() -> list[str]:
    """The source types ``sources.json`` may name."""
    return sorted(_KINDS)
