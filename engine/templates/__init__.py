"""The template catalog: index sources (Proxmox aplinfo, LXC simplestreams), download, local cache.

Each kind of source is a :class:`Source` class registered under its type
(:mod:`engine.templates.sources`); importing this package loads every kind.
Library only: no Django or Celery here; the CLI is ``python -m engine.templates``.
"""

from __future__ import annotations

from engine.templates.aplinfo import AplinfoSource, parse_aplinfo, verify_signature
from engine.templates.download import Cancelled, DownloadError, check_url, download
from engine.templates.entry import Entry, check_template_name
from engine.templates.simplestreams import SimplestreamsSource, parse_images, products_path
from engine.templates.sources import Source
from engine.templates.store import TemplateStore

__all__ = [
    "AplinfoSource",
    "Cancelled",
    "DownloadError",
    "Entry",
    "SimplestreamsSource",
    "Source",
    "TemplateStore",
    "check_template_name",
    "check_url",
    "download",
    "parse_aplinfo",
    "parse_images",
    "products_path",
    "verify_signature",
]
