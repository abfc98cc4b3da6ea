"""The Resources tab's disks: the root disk and mount points listed, resized, added and detached.

Resize is ``pct resize`` (``webui.actions.containers.resize``); adding is a config change ``mpN:
<storage>:<GiB>,mp=<path>`` the engine allocates; removing deletes ``mpN``, and the engine destroys its
volume unless a snapshot still holds it (unlike Proxmox, which keeps it as ``unusedN``: the page's
confirmation says so). Moving a volume to another storage is its own action.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.http import Http404
from django.urls import reverse
from django.views.decorators.http import require_POST

from webui.access import access_for
from webui.actions import containers as actions
from webui.views.common import client_address, container_or_gone, run_action

MP_SLOTS = [f"mp{i}" for i in range(256)]


def _props(text: str) -> dict[str, str]:
    head, *rest = (text or "").split(",")
    props = {"volume": head}
    for part in rest:
        key, _, value = part.partition("=")
        props[key.strip()] = value.strip()
    return props


def disk_rows(container) -> list[dict]:
    """``rootfs`` then each ``mpN`` in number order, with volume, mount path, size and options."""
    rows = []
    for key in ["rootfs", *MP_SLOTS]:
        raw = container.config.get(key)
        if not raw:
            continue
        props = _props(raw)
        rows.append(
            {
                "key": key,
                "volume": props.pop("volume"),
                "path": "/" if key == "rootfs" else props.pop("mp", ""),
                "size": props.pop("size", ""),
                "options": ", ".join(f"{k}={v}" for k, v in props.items()),
            }
        )
    return rows


def free_mount_slots(container) -> list[str]:
    return [s for s in MP_SLOTS if not container.config.get(s)][:8]


@require_POST
def disk_action(request, ctid: int, op: str):
    if op not in ("resize", "add", "detach"):
        raise Http404(f"no disk action '{op}'")
    container, gone = container_or_gone(request, ctid)
    if gone:
        return gone
    access, address, post = access_for(request), client_address(request), request.POST

    def act():
        if op == "resize":
            return actions.resize(access, container, post.get("disk", ""), post.get("size", ""), address=address)
        if op == "detach":
            disk = post.get("disk", "")
            if disk not in MP_SLOTS or not container.config.get(disk):
                raise ValidationError({"disk": [f"CT {ctid} has no mount point '{disk}'"]})
            return actions.update_config(access, container, {}, [disk], address=address)
        slot, storage, size, path = (post.get(k, "").strip() for k in ("slot", "storage", "size", "path"))
        if slot not in MP_SLOTS or container.config.get(slot):
            raise ValidationError({"slot": [f"'{slot}' is not a free mount point slot"]})
        if not storage or not size:
            raise ValidationError({"storage": ["a storage and a size in GiB are needed"]})
        value = f"{storage}:{size},mp={path}" + (",backup=1" if post.get("backup") else "")
        return actions.update_config(access, container, {slot: value}, address=address)

    done = {"resize": "resize of {d}", "detach": "detach of {d}", "add": "new mount point {d}"}[op]
    target = post.get("disk") or post.get("slot") or ""
    return run_action(
        request,
        act,
        done.format(d=target) + f" on CT {ctid} queued (job {{job.pk}})",
        reverse("ct-tab", args=[ctid, "resources"]),
    )
