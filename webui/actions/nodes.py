"""A node's actions: its template store and catalog (download, build, remove, refresh), starting and stopping
all its containers (startall, stopall); cancelling a job."""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import PermissionDenied, ValidationError

from webui.access import Access, deny, require
from webui.models import Container, Job, Node
from webui.models.queue import cancel, submit


def template_job(
    access: Access, node: Node, kind: str, target: str, params: dict | None = None, address: str | None = None
) -> Job:
    """Download, build, remove a template, or refresh the catalog, on one node."""
    require(access, "Datastore.AllocateTemplate", node, address=address)
    return submit(kind, node, node.path, target, user=access.user, params=params or {}, address=address)


MAX_STOP_TIMEOUT = 2 * 3600  # seconds per container, Proxmox's bound


def power_all_job(access: Access, node: Node, kind: str, params: dict, address: str | None = None) -> Job:
    """``startall`` or ``stopall`` on a node, as Proxmox's: ``vms`` (IDs; all the node's containers when absent),
    ``force`` (startall: not only ``onboot`` ones), ``timeout`` and ``force_stop`` (stopall).

    Proxmox asks VM.PowerMgmt on ``/``, or on each guest named in ``vms``. Here a node's containers inherit
    from the node, so the whole node needs VM.PowerMgmt on it (``/`` included), and, stricter, on each of
    its containers: one where it was taken away (a pool's or the container's own grant) is refused by name.
    """
    assert kind in ("startall", "stopall")
    clean = _power_all_params(kind, params)
    on_node = {c.ctid: c for c in Container.objects.filter(node=node).select_related("node", "pool")}
    if clean.get("vms"):
        missing = [ctid for ctid in clean["vms"] if ctid not in on_node]
        if missing:
            raise ValidationError({"vms": [f"not on node '{node.name}': CT {', '.join(map(str, missing))}"]})
        for ctid in clean["vms"]:
            require(access, "VM.PowerMgmt", on_node[ctid], address=address)
    else:
        require(access, "VM.PowerMgmt", node, address=address)
        denied = sorted(ctid for ctid, c in on_node.items() if not access.can("VM.PowerMgmt", c))
        if denied:
            deny(
                access,
                "denied VM.PowerMgmt",
                node.path,
                f"permission denied: VM.PowerMgmt on CT "
                f"{', '.join(map(str, denied))} is required for {kind} on the whole node; name the others in "
                "vms",
                address,
            )
    return submit(kind, node, node.path, "", user=access.user, params=clean, address=address)


def _power_all_params(kind: str, params: dict) -> dict:
    """The job's parameters, checked: a bad one is refused naming its key."""
    allowed = {"vms", "force"} if kind == "startall" else {"vms", "timeout", "force_stop"}
    errors = {
        key: [f"unknown field (for {kind}: {', '.join(sorted(allowed))})"] for key in params if key not in allowed
    }
    clean: dict = {}
    vms = params.get("vms")
    if isinstance(vms, str):  # Proxmox's form: "101,102"
        vms = [v.strip() for v in vms.replace(";", ",").split(",") if v.strip()]
    if vms not in (None, []):
        if not isinstance(vms, list) or not all(
            (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, str) and v.isdigit()) for v in vms
        ):
            errors["vms"] = ["expected a list of container IDs (or Proxmox's comma-separated string)"]
        else:
            clean["vms"] = sorted({int(v) for v in vms})
    for key in ("force", "force_stop"):
        if params.get(key) is not None and key in allowed:
            if not isinstance(params[key], bool):
                errors[key] = ["expected true or false"]
            else:
                clean[key] = params[key]
    if params.get("timeout") is not None and "timeout" in allowed:
        timeout = params["timeout"]
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not 0 <= timeout <= MAX_STOP_TIMEOUT:
            errors["timeout"] = [f"expected whole seconds from 0 to {MAX_STOP_TIMEOUT}"]
        else:
            clean["timeout"] = timeout
    if errors:
        raise ValidationError(errors)
    return clean


def cancel_job(access: Access, job: Job) -> None:
    """The job's owner, or anyone with Sys.Modify on the job's node, may cancel it."""
    if not (job.user_id == getattr(access.user, "id", None) or access.can("Sys.Modify", job.node)):
        raise PermissionDenied(
            f"permission denied: only the job's owner or Sys.Modify on {job.node.path} may cancel it"
        )
    cancel(job)


def oci_pull_job(access: Access, node: Node, body: dict, address: str | None = None) -> Job:
    """Pull an OCI image into the node's store (Proxmox's ``oci-registry-pull``): ``reference``, ``name``,
    ``username`` and ``password`` (sealed before the job is recorded: see ``webui.models.queue``)."""
    from engine.errors import ValidationError as EngineValidationError
    from engine.oci.reference import archive_name, parse

    require(access, "Datastore.AllocateTemplate", node, address=address)
    try:
        target = archive_name(parse(body["reference"]), body.get("name") or None)
    except EngineValidationError as exc:
        raise ValidationError({exc.key or "reference": [str(exc)]}) from None
    if bool(body.get("username")) != bool(body.get("password")):
        raise ValidationError({"password": ["a private registry needs both a user name and a password"]})
    params = {"reference": body["reference"].strip(), "name": body.get("name") or ""}
    if body.get("abandon"):
        params["abandon"] = True
    elif body.get("username"):
        params.update(username=body["username"], registry_password=body["password"])
    return submit("ociregistrypull", node, node.path, target, user=access.user, params=params, address=address)


def registry_tags(access: Access, node: Node, repository: str, username: str = "", password: str = "") -> list[str]:
    """The tags of a repository, for the pull form: asked by the web server itself (read-only, nothing is
    stored), through skopeo with the registry settings of this host's engine root, if it has one."""
    from engine.errors import EngineError
    from engine.errors import ValidationError as EngineValidationError
    from engine.oci.registry import Credentials, list_tags
    from engine.state import DEFAULT_ROOT

    require(access, "Datastore.AllocateTemplate", node)
    root = os.environ.get("CAISSON_ROOT") or DEFAULT_ROOT  # read now: the settings may change while serving
    try:
        credentials = Credentials(username, password) if username else None
        return list_tags(Path(root), repository, credentials)
    except EngineValidationError as exc:
        raise ValidationError({exc.key or "repository": [str(exc)]}) from None
    except EngineError as exc:
        raise ValidationError({"repository": [str(exc)]}) from None


def registry_settings(access: Access, node: Node) -> dict:
    """The node's registry settings (mirrors, registries reached over plain HTTP), read where the web server
    can read them (this host's engine root), as the tag listing does."""
    from engine.errors import EngineError
    from engine.oci.registry import Settings
    from engine.state import DEFAULT_ROOT

    require(access, "Sys.Audit", node)
    try:
        settings = Settings.load(Path(os.environ.get("CAISSON_ROOT") or DEFAULT_ROOT))
    except EngineError as exc:
        raise ValidationError({"settings": [str(exc)]}) from None
    return {"mirrors": settings.mirrors, "insecure": settings.insecure}


def set_registry_settings(access: Access, node: Node, body: dict, address: str | None = None) -> Job:
    """Change them on the node (a job): Sys.Modify on ``/``, as template sources (they decide where every
    image comes from, and which registries are reached without TLS)."""
    from engine.errors import ValidationError as EngineValidationError
    from engine.oci.registry import Settings

    require(access, "Sys.Modify", path="/", address=address)
    settings = Settings({k: list(v) for k, v in body.get("mirrors", {}).items()}, list(body.get("insecure", [])))
    try:
        settings.check()
    except EngineValidationError as exc:
        raise ValidationError({exc.key or "mirrors": [str(exc)]}) from None
    params = {"mirrors": settings.mirrors, "insecure": settings.insecure}
    return submit("ocisettings", node, node.path, node.name, user=access.user, params=params, address=address)
