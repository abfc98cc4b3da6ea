"""The template catalog: index sources (Proxmox aplinfo, LXC simplestreams), download, local cache.

Library only: no Django or Celery here; the CLI is ``python -m engine.templates``.
"""
from __future__ import annotations

from engine.templates.aplinfo import Entry, check_template_name, parse_aplinfo, verify_signature
from engine.templates.download import Cancelled, DownloadError, check_url, download
from engine.templates.simplestreams import parse_images, products_path
from engine.templates.store import Source, TemplateStore

__all__ = [
    "Cancelled", "DownloadError", "Entry", "Source", "TemplateStore", "check_template_name", "check_url",
    "download", "parse_aplinfo", "parse_images", "products_path", "verify_signature",
]
