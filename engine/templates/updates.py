"""Which stored templates have a newer version: one the catalog offers (re-download) or a local builder would
make now (rebuild).

A downloaded template is named as Proxmox names them,
``<package>_<version>_<arch>.tar.<ext>`` (``debian-12-standard_12.7-1_amd64.tar.zst``):
a catalog entry of the same package and architecture with a newer version
supersedes it.  A template a local builder made carries the version the
builder gave it (``busybox-1.36.1-1_amd64.tar.zst``); the builder says which
version it would make now (``Builder.current_version``, listed as the
catalog entry's version), and an older stored one is offered a rebuild.
Versions compare part by part, numbers as numbers (``12.10`` after ``12.9``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.builders import find_offer, get_builder

PVE_NAME = re.compile(r"(?P<package>[^_/]+)_(?P<version>[^_/]+)_(?P<arch>[^_./]+)\.tar\.(?:gz|xz|zst)")


@dataclass(frozen=True)
class Update:
    stored: str  # the stored archive that is out of date
    action: str  # "download" (the catalog's newer archive) or "rebuild" (a local builder's offer)
    target: str  # what the action takes: the archive name to download, or the builder offer's name
    version: str  # the newer version


def version_key(version: str) -> list[tuple[int, int | str]]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[^A-Za-z0-9]+", version) if p]


def _newer(candidate: str, than: str) -> bool:
    return version_key(candidate) > version_key(than)


def successor(stored: list[str], name: str) -> str | None:
    """The newest stored template that supersedes ``name``: the same package and architecture, or built by
    the same builder, with a newer version; None if there is none."""
    from engine.builders import offers

    def family(candidate: str):
        match = PVE_NAME.fullmatch(candidate)
        if match:
            return ("pve", match["package"], match["arch"]), match["version"]
        for offer in offers():
            version = get_builder(offer.builder).built_version(offer, candidate)
            if version is not None:
                return ("built", offer.builder, offer.name), version
        return None, None

    kind, version = family(name)
    if kind is None:
        return None
    best = None
    for candidate in stored:
        other, other_version = family(candidate)
        if other == kind and _newer(other_version, version) and (best is None or _newer(other_version, best[1])):
            best = (candidate, other_version)
    return best[0] if best else None


def updates(stored: list[str], catalog: list[tuple[str, str, bool]]) -> dict[str, Update]:
    """``{stored name: Update}`` for the stored templates that have a newer version.

    ``catalog``: ``(name, version, buildable)`` of each catalog entry (an archive name for a downloadable
    one, a builder offer's name for a buildable one)."""
    found: dict[str, Update] = {}
    downloadable: dict[tuple[str, str], tuple[str, str]] = {}
    for name, _, buildable in catalog:
        match = None if buildable else PVE_NAME.fullmatch(name)
        if match:
            key = (match["package"], match["arch"])
            if key not in downloadable or _newer(match["version"], downloadable[key][1]):
                downloadable[key] = (name, match["version"])
    for name in stored:
        match = PVE_NAME.fullmatch(name)
        best = downloadable.get((match["package"], match["arch"])) if match else None
        if best and _newer(best[1], match["version"]) and best[0] not in stored:  # stored already: nothing to do
            found[name] = Update(name, "download", best[0], best[1])
    for offer_name, version, buildable in catalog:
        offer = find_offer(offer_name) if buildable and version not in ("", "local") else None
        if offer is None:
            continue
        builder = get_builder(offer.builder)
        built = {name: builder.built_version(offer, name) for name in stored}
        built = {name: v for name, v in built.items() if v is not None}
        if any(not _newer(version, v) for v in built.values()):
            continue  # the current build is stored already
        for name in built:
            if name not in found:
                found[name] = Update(name, "rebuild", offer.name, version)
    return found
