"""The create wizard: one page with a tab per step, each step checked on the server before the next.

``validate_step`` answers with the step's field errors (the page shows them
beside the fields); ``summary`` runs every step together, as the final
submit will; ``create`` calls ``actions.create_container`` and lands on the
new container's page.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from webui.access import access_for
from webui.actions import containers as actions
from webui.errors import NON_FIELD, error_response, refusal_response, validation_fields
from webui.forms.create import STEP_FORMS, STEPS, CreateRequest, propose_ctid
from webui.models import Node, StorageMirror, StoredTemplate
from webui.models.queue import JobRefused
from webui.views.common import client_address, wants_json

FIELD_STEP = {field: step for step, form in STEP_FORMS.items() for field in form.base_fields}


def allocatable_nodes(request) -> list[Node]:
    access = access_for(request)
    return [n for n in Node.objects.all() if access.can("VM.Allocate", n)]


def _forms(request, data=None) -> list[dict]:
    nodes = allocatable_nodes(request)
    online = next((n for n in nodes if n.online), nodes[0] if nodes else None)
    initial = {"general": {"ctid": propose_ctid(), "node": online.name if online else ""}}
    steps = []
    for name, label, form_class in STEPS:
        form = form_class(data) if data is not None else form_class(initial=initial.get(name))
        if name == "general":
            form.fields["node"].queryset = Node.objects.filter(pk__in=[n.pk for n in nodes])
        steps.append({"name": name, "label": label, "form": form})
    return steps


def wizard(request):
    nodes = allocatable_nodes(request)
    if not nodes:
        raise PermissionDenied("permission denied: VM.Allocate on a node is required to create containers")
    templates = StoredTemplate.objects.filter(node__in=nodes).select_related("node")
    return render(
        request,
        "webui/create.html",
        {
            "steps": _forms(request),
            "templates": templates,
            "storages": container_storages(nodes),
            "nodes": nodes,
            "bridges": node_bridges(nodes),
        },
    )


def container_storages(nodes: list[Node]) -> list[StorageMirror]:
    """The enabled storages that take root disks (rootdir) on these nodes, as their agents report them."""
    rows = StorageMirror.objects.filter(node__in=nodes, enabled=True).select_related("node")
    return [st for st in rows if "rootdir" in st.content]


def node_bridges(nodes: list[Node]) -> list[tuple[str, str]]:
    """(node, bridge) for the wizard's bridge list: only bridges a NIC may use there (webui/nic_rights.py)."""
    from webui.nic_rights import usable_bridges

    return [(node.name, bridge) for node in nodes for bridge in usable_bridges(node)]


def _step_errors(step: str, data) -> dict[str, list[str]]:
    """One step's errors, with its checks against the chosen node's mirror (template, storage, bridge), so a
    wrong pick is refused at its own step rather than after Finish."""
    form = STEP_FORMS[step](data)
    if form.is_valid() and hasattr(form, "check_on"):
        general = STEP_FORMS["general"](data)
        general.is_valid()
        if "node" not in general.errors:
            form.check_on(general.cleaned_data.get("node"))
    return {k: list(v) for k, v in form.errors.items()}


@require_POST
def validate_step(request, step: str):
    """The errors of one step keyed by field (400), or just the step when it is fine."""
    if step not in STEP_FORMS:
        return error_response(404, f"no step '{step}'")
    errors = _step_errors(step, request.POST)
    if step == "general" and "node" not in errors:
        node = Node.objects.get(name=request.POST["node"])
        if not access_for(request).can("VM.Allocate", node):
            errors["node"] = [f"you may not create containers on node '{node.name}' (VM.Allocate)"]
    if errors:
        return error_response(400, fields=errors, step=step)
    return JsonResponse({"step": step})


def _summary(create: CreateRequest) -> list[tuple[str, str]]:
    general, disk = create.data("general"), create.data("disk")
    rows = [
        ("Node", create.node.name),
        ("CT ID", str(create.ctid)),
        ("Template", create.data("template")["template"]),
        ("Root disk", f"{disk['storage']}:{disk['disk_size']}"),
    ]
    rows += [(key, value) for key, value in create.options().items()]
    if general.get("isolated_idmap"):
        rows.append(("ID range", "isolated: a range of its own, chosen by the node"))
    rows.append(("Root password", "set" if create.has_password else "not set"))
    rows.append(("SSH public keys", "given" if (general.get("ssh_public_keys") or "").strip() else "none"))
    for key, label in (("user_data", "cloud-init user data"), ("firstboot", "First-boot script")):
        if (general.get(key) or "").strip():
            rows.append((label, f"{len(general[key].encode())} bytes"))
    return rows


@require_POST
def summary(request):
    """Every step at once: the first failing step and its errors, or the summary the Confirm tab shows."""
    create = CreateRequest(request.POST)
    if not create.is_valid():
        errors = {k: [str(m) for m in v] for k, v in create.errors.items()}
        first = next((name for name, _, _ in STEPS if any(FIELD_STEP.get(f) == name for f in errors)), "general")
        return error_response(400, fields=errors, step=first)
    return JsonResponse({"summary": _summary(create)})


@require_POST
def create(request):
    if not allocatable_nodes(request):
        exc = PermissionDenied("permission denied: VM.Allocate on a node is required to create containers")
        if wants_json(request):
            return refusal_response(exc)
        raise exc
    try:
        job = actions.create_container(access_for(request), request.POST, address=client_address(request))
    except PermissionDenied as exc:
        if wants_json(request):
            return refusal_response(exc)
        raise
    except (ValidationError, JobRefused) as exc:
        errors = validation_fields(exc) if isinstance(exc, ValidationError) else {NON_FIELD: [str(exc)]}
        first = next((name for name, _, _ in STEPS if any(FIELD_STEP.get(f) == name for f in errors)), "confirm")
        if wants_json(request):
            return error_response(400, fields=errors, job=getattr(exc, "job", None), step=first)
        nodes = allocatable_nodes(request)
        templates = StoredTemplate.objects.filter(node__in=nodes).select_related("node")
        return render(
            request,
            "webui/create.html",
            {
                "steps": _forms(request, request.POST),
                "templates": templates,
                "nodes": nodes,
                "active": first,
                "storages": container_storages(nodes),
                "bridges": node_bridges(nodes),
                "general_errors": errors.get(NON_FIELD, []),
            },
            status=400,
        )
    url = reverse("ct", args=[int(job.target)])
    if wants_json(request):
        return JsonResponse({"job": job.summary(), "location": url}, status=202)
    return redirect(url)
