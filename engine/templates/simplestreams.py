"""The ``simplestreams`` source kind: an LXC image server's index, read into template entries.

The server publishes ``streams/v1/index.json``, which names the product
file (usually ``streams/v1/images.json``); each product
(``debian:bookworm:amd64:default``) has versions, each with items. The item
whose ``ftype`` is ``root.tar.xz`` is the rootfs tarball this engine can
use. Only the latest version of each product is listed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from engine.errors import ValidationError
from engine.templates.download import fetch
from engine.templates.entry import Entry, check_checksum, check_template_name, resolve_location
from engine.templates.sources import Index, Source, register

ROOTFS_FTYPE = "root.tar.xz"
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def _load(text: str | bytes, what: str) -> dict:
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(f"{what} is not simplestreams JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValidationError(f"{what} is not a simplestreams document (top level is not an object)")
    return data


def products_path(index_text: str | bytes, source_id: str) -> str:
    """The relative path of the image product list named by ``streams/v1/index.json``."""
    what = f"source {source_id}: streams/v1/index.json"
    index = _load(index_text, what).get("index")
    if not isinstance(index, dict):
        raise ValidationError(f"{what} has no 'index' object", key="index")
    for key, stream in index.items():
        if isinstance(stream, dict) and stream.get("datatype") == "image-downloads":
            path = stream.get("path")
            if not isinstance(path, str) or not path:
                raise ValidationError(f"{what}: stream {key!r} has no path", key="path")
            return path
    raise ValidationError(f"{what} lists no image-downloads stream", key="datatype")


def _safe(text: str) -> str:
    return _UNSAFE.sub("-", text).strip("-.") or "x"


def parse_images(images_text: str | bytes, base_url: str, source_id: str) -> list[Entry]:
    """Entries for the latest rootfs of every product in ``images.json``."""
    what = f"source {source_id}: images.json"
    products = _load(images_text, what).get("products")
    if not isinstance(products, dict):
        raise ValidationError(f"{what} has no 'products' object", key="products")
    entries = []
    for key in sorted(products):
        product = products[key]
        where = f"{what}, product {key!r}"
        if not isinstance(product, dict) or not isinstance(product.get("versions"), dict):
            raise ValidationError(f"{where} has no versions", key="versions")
        found = None
        for version in sorted(product["versions"], reverse=True):
            items = (product["versions"][version] or {}).get("items") or {}
            for item in items.values() if isinstance(items, dict) else ():
                if isinstance(item, dict) and item.get("ftype") == ROOTFS_FTYPE:
                    found = version, item
                    break
            if found:
                break
        if not found:
            continue
        version, item = found
        if not isinstance(item.get("path"), str) or not isinstance(item.get("sha256"), str):
            raise ValidationError(f"{where}, version {version}: item lacks path or sha256", key="path")
        parts = key.split(":")
        os_name = str(product.get("os") or parts[0])
        release = str(product.get("release") or (parts[1] if len(parts) > 1 else ""))
        arch = str(product.get("arch") or (parts[2] if len(parts) > 2 else ""))
        variant = str(product.get("variant") or (parts[3] if len(parts) > 3 else "default"))
        package = _safe(f"{os_name.lower()}-{release}-{variant}")
        name = check_template_name(f"{package}_{_safe(version)}_{_safe(arch)}.tar.xz")
        size = item.get("size")
        entries.append(
            Entry(
                name=name,
                package=package,
                version=version,
                os=f"{os_name.lower()}-{release}",
                section="system",
                type="lxc",
                arch=arch,
                location=resolve_location(base_url, item["path"], f"{where}, path"),
                source_id=source_id,
                headline=f"{os_name} {release} {arch} ({variant})",
                description=str(product.get("release_title") or ""),
                sha256=check_checksum("sha256", item["sha256"], f"{where}, sha256"),
                size=size if isinstance(size, int) and size >= 0 else None,
            )
        )
    return entries


@register
class SimplestreamsSource(Source):
    """``url`` is the server's base; its ``streams/v1/index.json`` names the product list. No signature."""

    type = "simplestreams"

    @property
    def base(self) -> str:
        return self.url if self.url.endswith("/") else self.url + "/"

    def fetch(self, max_bytes: int) -> Index:
        index = fetch(resolve_location(self.base, "streams/v1/index.json"), max_bytes=max_bytes)
        images = fetch(resolve_location(self.base, products_path(index, self.id)), max_bytes=max_bytes)
        files = {"index.json": index, "images.json": images}
        return Index(files, False, self.entries(files.__getitem__))

    def entries(self, read: Callable[[str], bytes]) -> list[Entry]:
        return parse_images(read("images.json"), self.base, self.id)
