"""Bulk actions on a selection of containers (the container tables' bar): one job per container.

Each container goes through the same action as its own page's button (rights, state, input checked there);
one that is refused does not stop the others, and the answer names each refusal with its reason. A
container already in the wanted state is skipped, as Proxmox's bulk start skips running guests.
"""

from __future__ import annotations

import re

from django.core.exceptions import PermissionDenied, ValidationError

from webui.access import Access
from webui.actions import backups as backup_actions
from webui.actions import containers as ct_actions
from webui.errors import refusal
from webui.models import Container, Job
from webui.models.queue import JobRefused

ACTIONS = ("start", "shutdown", "stop", "reboot", "backup", "tag", "untag")
NEEDS = {"start": "stopped", "shutdown": "running", "stop": "running", "reboot": "running"}
MAX_SELECTION = 1000
TAG = re.compile(r"^[a-z0-9_][a-z0-9_\-+.]*$", re.IGNORECASE)  # Proxmox's tag syntax


def parse_tags(text: str) -> list[str]:
    """``"web, prod"`` -> ``["web", "prod"]``; a tag Proxmox would refuse is refused here by name."""
    tags = [t for t in re.split(r"[;,\s]+", text or "") if t]
    bad = [t for t in tags if not TAG.match(t) or len(t) > 64]
    if bad:
        raise ValidationError({"tags": [f"not a tag: {', '.join(bad)} (letters, digits, _ - + . ; at most 64)"]})
    if not tags:
        raise ValidationError({"tags": ["name at least one tag"]})
    return tags


def parse_ids(values) -> list[int]:
    try:
        ids = sorted({int(v) for v in values})
    except (TypeError, ValueError):
        raise ValidationError({"ctid": ["container IDs are whole numbers"]}) from None
    if not ids:
        raise ValidationError({"ctid": ["select at least one container"]})
    if len(ids) > MAX_SELECTION:
        raise ValidationError({"ctid": [f"at most {MAX_SELECTION} containers at once"]})
    return ids


def _retag(current: str, tags: list[str], add: bool) -> str:
    have = [t for t in re.split(r"[;,\s]+", current or "") if t]
    if add:
        return ";".join(have + [t for t in tags if t not in have])
    return ";".join(t for t in have if t not in tags)


def _one(access: Access, container: Container, action: str, data: dict, tags: list[str], address) -> Job | None:
    if action in NEEDS:
        if container.status != NEEDS[action]:
            return None  # already where it should be
        params = {"timeout": 60, "force_stop": True} if action == "shutdown" else {}
        return ct_actions.power(access, container, action, params, address=address)
    if action == "backup":
        return backup_actions.backup_now(access, container, data, address=address)
    current = str((container.config or {}).get("tags", ""))
    wanted = _retag(current, tags, add=action == "tag")
    if wanted == current:
        return None
    if not wanted:
        return ct_actions.update_config(access, container, {}, ["tags"], address=address)
    return ct_actions.update_config(access, container, {"tags": wanted}, address=address)


def run_bulk(access: Access, action: str, ids, data: dict | None = None, address: str | None = None) -> dict:
    """``{"jobs": [Job], "skipped": [ctid], "refused": {ctid: reason}}`` for ``action`` on each container."""
    if action not in ACTIONS:
        raise ValidationError({"action": [f"unknown bulk action '{action}' (use {', '.join(ACTIONS)})"]})
    ids = parse_ids(ids)
    data = dict(data or {})
    tags = parse_tags(data.pop("tags", "")) if action in ("tag", "untag") else []
    found = {c.ctid: c for c in Container.objects.filter(ctid__in=ids).select_related("node", "pool")}
    result: dict = {"jobs": [], "skipped": [], "refused": {}}
    for ctid in ids:
        container = found.get(ctid)
        if container is None or not access.can("VM.Audit", container):
            result["refused"][ctid] = f"CT {ctid} does not exist"  # one the user may not see: nothing leaks
            continue
        try:
            job = _one(access, container, action, data, tags, address)
        except (PermissionDenied, ValidationError, JobRefused) as exc:
            result["refused"][ctid] = refusal(exc)[1]["error"]["message"]
            continue
        if job is None:
            result["skipped"].append(ctid)
        else:
            result["jobs"].append(job)
    return result
