"""A container's page (one URL per tab) and the actions its buttons and forms send.

The forms of snapshots, clone and power are read by the API's serializers of the same actions
(``form_validated``): one declaration of each field for both.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.http import Http404
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_POST

from webui.access import access_for
from webui.actions import containers as actions
from webui.api.serializers.base import form_validated
from webui.api.serializers.containers import CloneSerializer, PowerSerializer, SnapshotSerializer
from webui.forms.create import propose_ctid
from webui.models import Container, Job
from webui.nic_rights import usable_bridges
from webui.template_updates import for_container, stored_successor
from webui.views.common import audit_container, client_address, container_action, container_or_gone, run_action
from webui.views.metrics import TIMEFRAMES, series, sizing_hints, timeframe

TABS = [
    ("summary", "Summary"),
    ("console", "Console"),
    ("resources", "Resources"),
    ("network", "Network"),
    ("firewall", "Firewall"),  # its own page (webui/views/firewall.py): the URL resolves there first
    ("options", "Options"),
    ("files", "Files"),
    ("snapshots", "Snapshots"),
    ("backup", "Backup"),
    ("tasks", "Task history"),
]
RESOURCE_KEYS = ["cores", "cpuset", "cpulimit", "cpuunits", "memory", "swap", "pids", "ioweight"]
OPTION_KEYS = [
    "hostname",
    "description",
    "onboot",
    "startup",
    "protection",
    "tags",
    "nameserver",
    "searchdomain",
    "cmode",
    "tty",
    "console",
    "features",
]
CHECKBOX_KEYS = {"onboot", "protection", "console"}
CHECKBOX_ON_BY_DEFAULT = {"console"}  # unset means on
NIC_SLOTS = [f"net{i}" for i in range(10)]
NIC_FIELDS = ["name", "bridge", "ip", "gw", "ip6", "gw6", "tag", "trunks", "mtu", "rate", "firewall", "hwaddr"]


def parse_props(text: str) -> dict[str, str]:
    """``name=eth0,bridge=vmbr0,...`` as a dict (display only; the engine's parser checks on save)."""
    props = {}
    for part in (text or "").split(","):
        key, sep, value = part.partition("=")
        if sep:
            props[key.strip()] = value.strip()
    return props


# What the page asks before an action that interrupts a running container or loses data (asked in the page).
CONFIRM = {
    "shutdown": "Shut down CT {ctid}? Its services stop; it is stopped hard if it does not halt in time.",
    "stop": "Stop CT {ctid} now? Its processes are killed without a clean shutdown; unsaved data is lost.",
    "reboot": "Reboot CT {ctid}? Its services are interrupted while it restarts.",
    "destroy": "Destroy CT {ctid} and all its volumes? This cannot be undone.",
}


def buttons(access, container: Container) -> list[dict]:
    """The power and destroy buttons; ``when`` is the status they need, ``allowed`` the user's right."""
    power = access.can("VM.PowerMgmt", container)
    allocate = access.can("VM.Allocate", container)
    template = str(container.config.get("template", "0")) == "1"
    spec = [
        ("start", "Start", "never" if template else "stopped", power),  # a template never starts: clone it
        ("shutdown", "Shutdown", "running", power),
        ("stop", "Stop", "running", power),
        ("reboot", "Reboot", "running", power),
    ]
    result = [
        {
            "action": a,
            "label": label,
            "when": when,
            "allowed": ok,
            "url": reverse("ct-power", args=[container.ctid, a]),
            "enabled": ok and container.status == when,
            "confirm": CONFIRM.get(a, "").format(ctid=container.ctid),
        }
        for a, label, when, ok in spec
    ]
    result.append(
        {
            "action": "destroy",
            "label": "Destroy",
            "when": "stopped",
            "allowed": allocate,
            "url": reverse("ct-destroy", args=[container.ctid]),
            "enabled": allocate and container.status == "stopped",
            "confirm": CONFIRM["destroy"].format(ctid=container.ctid),
        }
    )
    from webui.views.machine import machine_buttons

    return result[:4] + machine_buttons(access, container) + result[4:]


def container_page(request, ctid: int, tab: str = "summary"):
    if tab not in dict(TABS):
        raise Http404(f"no tab '{tab}'")
    container = Container.objects.select_related("node", "pool").filter(ctid=ctid).first()
    if container is None:
        raise Http404(f"CT {ctid} does not exist (it may have been destroyed)")
    audit_container(request, container)
    if not container.node.online:  # shown, not saved: what the node last said may be stale (shown_status)
        container.status = Container.Status.UNKNOWN
    access = access_for(request)
    context = {
        "ct": container,
        "tabs": TABS,
        "tab": tab,
        "buttons": buttons(access, container),
        "can_config": access.can("VM.Config", container),
        "digest": container.digest,
        "page_subscribe": [f"ct/{ctid}"],
    }
    if tab == "summary":
        frame = timeframe(request)
        context["diagnosis"] = start_diagnosis(container)
        context.update(
            chart=series(f"ct/{ctid}", frame, ("cpu", "memory", "net", "disk", "diskio")),
            timeframe=frame,
            timeframes=TIMEFRAMES,
            hints=sizing_hints(container),
            template_update=for_container(container),
            template_successor=stored_successor(container),
            can_rebuild=access.can("VM.Allocate", container) and access.can("VM.Snapshot", container),
            can_template=access.can("Datastore.AllocateTemplate", container.node),
        )
    elif tab == "resources":
        from webui.views.machine import disks_context

        context["values"] = {k: container.config.get(k, "") for k in RESOURCE_KEYS}
        context.update(disks_context(access, container))
    elif tab == "files":
        context["can_files"] = access.can("VM.Config", container)
    elif tab == "options":
        context["values"] = {k: container.config.get(k, "") for k in OPTION_KEYS}
    elif tab == "network":
        nics = [
            {"slot": slot, "raw": container.config[slot], **parse_props(container.config[slot])}
            for slot in NIC_SLOTS
            if container.config.get(slot)
        ]
        used = {n["slot"] for n in nics}
        edit = request.GET.get("edit")
        context.update(
            nics=nics,
            free_slots=[s for s in NIC_SLOTS if s not in used],
            edit=next((n for n in nics if n["slot"] == edit), None),
            bridges=usable_bridges(container.node),  # the node's bridges a NIC may use (webui/nic_rights.py)
        )
    elif tab == "snapshots":
        context.update(snapshots=snapshot_rows(container.snapshots), can_snapshot=access.can("VM.Snapshot", container))
    elif tab == "backup":
        from webui.views.backups import backup_tab_context

        context.update(backup_tab_context(request, container))
    elif tab == "tasks":
        context["jobs"] = Job.objects.filter(path=container.path).select_related("node", "user")[:100]
    context.update(
        can_console=access.can("VM.Console", container),
        can_clone=access.can("VM.Clone", container) and access.can("VM.Allocate", container.node),
        next_id=propose_ctid() if tab == "summary" else None,
    )
    from webui.views.migrate import migrate_context

    context.update(migrate_context(access, container))
    return render(request, "webui/container.html", context)


def start_diagnosis(container: Container) -> dict | None:
    """The newest start's diagnosis (``tasks.start_diagnosis``) while the container is not running, if it failed."""
    if container.status == Container.Status.RUNNING:
        return None
    last = Job.objects.filter(path=container.path, kind="vzstart").exclude(status__in=Job.ACTIVE).first()
    if last is None or last.status != Job.Status.ERROR or not isinstance(last.params.get("diagnosis"), dict):
        return None
    return {**last.params["diagnosis"], "job": last}


def snapshot_rows(snapshots: list[dict]) -> list[dict]:
    """The snapshot tree in display order, each with its depth (``pct listsnapshot``'s indentation)."""
    names = {s["name"] for s in snapshots}
    children: dict[str | None, list[dict]] = {}
    for snap in snapshots:
        parent = snap.get("parent") if snap.get("parent") in names and snap.get("parent") != snap["name"] else None
        children.setdefault(parent, []).append(snap)
    rows: list[dict] = []

    def walk(parent: str | None, depth: int) -> None:
        for snap in children.get(parent, []):
            when = datetime.fromtimestamp(snap["snaptime"], UTC) if snap.get("snaptime") else None
            rows.append({**snap, "depth": depth, "indent": depth * 1.5, "when": when})
            if snap["name"] != "current":
                walk(snap["name"], depth + 1)

    walk(None, 0)
    return rows


@require_POST
def snapshot(request, ctid: int, operation: str):
    name = request.POST.get("name", "").strip()
    verb = {"snapshot": "snapshot", "rollback": "rollback to", "delete": "deletion of"}.get(operation, operation)

    def act(access, container, address):
        body = form_validated(SnapshotSerializer, request.POST)
        return actions.snapshot(
            access, container, operation, body["name"].strip(), body.get("description", ""), address=address
        )

    return container_action(request, ctid, act, f"{verb} '{name}' of CT {ctid} queued (job {{job.pk}})", "snapshots")


@require_POST
def clone(request, ctid: int):
    def act(access, container, address):
        body = form_validated(CloneSerializer, request.POST)
        return actions.clone(
            access,
            container,
            body["newid"],
            snapshot_name=body.get("snapshot"),
            full=body.get("full", False),
            storage=body.get("storage"),
            hostname=body.get("hostname"),
            address=address,
        )

    return container_action(
        request, ctid, act, f"clone of CT {ctid} to CT {request.POST.get('newid')} queued (job {{job.pk}})"
    )


@require_POST
def power(request, ctid: int, action: str):
    def act(access, container, address):
        return actions.power(access, container, action, form_validated(PowerSerializer, request.POST), address=address)

    return container_action(request, ctid, act, f"{action} of CT {ctid} queued (job {{job.pk}})")


@require_POST
def destroy(request, ctid: int):
    force = request.POST.get("force") == "1"

    def act(access, container, address):
        return actions.destroy(access, container, force=force, address=address)

    return container_action(request, ctid, act, f"destroy of CT {ctid} queued (job {{job.pk}})")


@require_POST
def make_template(request, ctid: int):
    def act(access, container, address):
        return actions.make_template(access, container, request.POST.get("name", ""), address=address)

    return container_action(request, ctid, act, f"template from CT {ctid} queued (job {{job.pk}})", "options")


def config_changes(container: Container, post) -> tuple[dict, list[str]]:
    """What a tab's form changes: keys it covers whose value differs; an emptied key is deleted."""
    changes, delete = {}, []
    for key in post.getlist("keys"):
        if key in CHECKBOX_KEYS:
            value = "1" if post.get(key) else "0"
        else:
            value = post.get(key, "").strip() if key != "description" else post.get(key, "")
        current = str(container.config.get(key, ""))
        default = "1" if key in CHECKBOX_ON_BY_DEFAULT else "0"
        if key in CHECKBOX_KEYS and current in ("", default) and value == default:
            continue
        if value == current:
            continue
        if value == "":
            delete.append(key)
        else:
            changes[key] = value
    return changes, delete


def nic_value(post) -> str:
    props = {field: post.get(field, "").strip() for field in NIC_FIELDS}
    props["firewall"] = "1" if post.get("firewall") else ""
    return ",".join(f"{k}={v}" for k, v in props.items() if v)


@require_POST
def update_config(request, ctid: int):
    container, gone = container_or_gone(request, ctid)
    if gone:
        return gone
    slot = request.POST.get("slot", "")
    if request.POST.get("remove") in NIC_SLOTS:
        changes, delete = {}, [request.POST["remove"]]
    elif slot:
        changes, delete = ({slot: nic_value(request.POST)} if slot in NIC_SLOTS else {"slot": slot}), []
    else:
        changes, delete = config_changes(container, request.POST)
    digest = request.POST.get("digest") or None
    tab = request.POST.get("tab", "summary")
    return run_action(
        request,
        lambda: actions.update_config(
            access_for(request), container, changes, delete, digest=digest, address=client_address(request)
        ),
        f"configuration change of CT {ctid} queued (job {{job.pk}})",
        reverse("ct-tab", args=[ctid, tab]),
    )
