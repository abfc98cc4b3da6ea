"""Which containers run a distribution past its end of life, from the mirror's os-release and the EOL data.

The data is ``engine.templates.eol``'s (shipped with Caisson, with this
host's ``<root>/template/eol.json`` over it when the web tier runs on a
node); the container's release is what its node read from its
``/etc/os-release`` (``Container.os_release``, read again at each start).
"""

from __future__ import annotations

import os
from datetime import date
from functools import lru_cache

from django.conf import settings
from django.utils import timezone

from engine.templates.eol import Release, load, of_template, release
from webui.models import Container


@lru_cache(maxsize=1)
def data() -> dict:
    return load(os.environ.get("CAISSON_ROOT") or getattr(settings, "CAISSON_ROOT", None))


def container_release(container: Container) -> Release | None:
    info = container.os_release or {}
    if not info.get("ID") or not info.get("VERSION_ID"):
        return None
    return release(data(), info["ID"], info["VERSION_ID"])


def template_release(name: str) -> Release | None:
    return of_template(data(), name)


def report(containers=None, today: date | None = None, all_known: bool = False) -> list[dict]:
    """One row per container on an ended release (``all_known``: per container whose release is known)."""
    today = today or timezone.localdate()
    rows = []
    for ct in containers if containers is not None else Container.objects.select_related("node"):
        found = container_release(ct)
        if found is None or not (all_known or found.ended(today)):
            continue
        rows.append(
            {
                "ctid": ct.ctid,
                "hostname": ct.hostname,
                "node": ct.node.name,
                "os": ct.os_release.get("PRETTY_NAME", ""),
                **found.as_dict(today),
            }
        )
    return rows
