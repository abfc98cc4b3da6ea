"""A container as a machine: suspend, resume, convert to template, move a volume, files in and out.

Rights, as Proxmox's: suspend and resume need VM.PowerMgmt; a package update
VM.Config (a root command inside) and VM.Snapshot (its safety snapshot); a template
VM.Allocate (it takes the container out of service for good); moving a volume
VM.Config (the privilege this installation gives disk changes, as resize) and
Datastore.AllocateSpace on the target storage.  Files are copied as the
container's root (``pct push``/``pull`` are root's alone in Proxmox): both
need VM.Config, as a root shell does (``webui.console.tickets``), since either
reads or writes anything root can inside the container.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError

from engine.errors import ValidationError as EngineValidationError
from engine.files import check_container_path, parse_perms
from webui.access import Access, require, require_space
from webui.actions.containers import container_job, mirror_section, storage_of
from webui.models import Container, Job, staging
from webui.models.queue import JobRefused

OWNER = re.compile(r"^(\d{1,10}|[A-Za-z_][A-Za-z0-9._-]{0,31}\$?)$")


def _running(container: Container, what: str) -> None:
    if container.status != Container.Status.RUNNING:
        raise JobRefused(f"CT {container.ctid} is not running; {what} needs a running container")


def suspend(access: Access, container: Container, address: str | None = None) -> Job:
    require(access, "VM.PowerMgmt", container, address=address)
    _running(container, "suspend")
    if container.paused:
        raise JobRefused(f"CT {container.ctid} is already suspended")
    return container_job(access, container, "vzsuspend", {}, address)


def resume(access: Access, container: Container, address: str | None = None) -> Job:
    require(access, "VM.PowerMgmt", container, address=address)
    if not container.paused:
        raise JobRefused(f"CT {container.ctid} is not suspended")
    return container_job(access, container, "vzresume", {}, address)


def template(access: Access, container: Container, address: str | None = None) -> Job:
    require(access, "VM.Allocate", container, address=address)
    if str(container.config.get("template", "0")) == "1":
        raise JobRefused(f"CT {container.ctid} is a template already")
    if container.status != Container.Status.STOPPED:
        raise JobRefused(f"CT {container.ctid} is {container.status}; stop it before converting it to a template")
    return container_job(access, container, "vztemplate", {}, address)


def upgrade(access: Access, container: Container, address: str | None = None) -> Job:
    """Update the container's packages: a root command inside (VM.Config, as a root shell) after a safety
    snapshot (VM.Snapshot); refused for an ostype without a known package manager."""
    from engine.distro.upgrade import upgrade_command

    require(access, "VM.Config", container, address=address)
    require(access, "VM.Snapshot", container, address=address)
    _running(container, "a package update")
    try:
        upgrade_command(container.config.get("ostype"))
    except EngineValidationError as exc:
        raise JobRefused(f"CT {container.ctid}: {exc}") from None
    return container_job(access, container, "vzupgrade", {}, address)


def rebuild(access: Access, container: Container, template: str, address: str | None = None) -> Job:
    """A change of template: the stopped container's root file system made anew from a template stored on its
    node, its settings kept, after a safety snapshot. VM.Allocate (its data is replaced, as by a restore over
    it) and VM.Snapshot; refused while it runs or for a template the node does not store."""
    from webui.models import StoredTemplate

    require(access, "VM.Allocate", container, address=address)
    require(access, "VM.Snapshot", container, address=address)
    name = (template or "").strip().removeprefix("local:vztmpl/")
    if not StoredTemplate.objects.filter(node=container.node, name=name).exists():
        raise ValidationError({"template": [f"'{name}' is not a template stored on node {container.node.name}"]})
    if container.status != Container.Status.STOPPED:
        raise JobRefused(f"CT {container.ctid} is {container.status}; stop it before rebuilding it on a template")
    return container_job(access, container, "vzrebuild", {"template": f"local:vztmpl/{name}"}, address)


def move_volume(
    access: Access, container: Container, volume: str, storage: str, delete: bool = False, address: str | None = None
) -> Job:
    require(access, "VM.Config", container, address=address)
    errors = {}
    if not isinstance(volume, str) or not re.fullmatch(r"rootfs|mp\d{1,3}", volume):
        errors["volume"] = ["rootfs or mpN"]
    elif volume not in container.config:
        errors["volume"] = [f"CT {container.ctid} has no {volume}"]
    if not isinstance(storage, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]{0,63}", storage):
        errors["storage"] = ["a storage ID"]
    elif "rootdir" not in (getattr(container.node.storages.filter(name=storage).first(), "content", None) or []):
        errors["storage"] = [f"node {container.node.name} has no storage '{storage}' for container volumes"]
    if errors:
        raise ValidationError(errors)
    current = storage_of(mirror_section(container).get(volume).get("volume"))
    if current is None:
        raise ValidationError({"volume": [f"{volume} is a host directory, not a volume"]})
    if current == storage:
        raise ValidationError({"storage": [f"{volume} is on '{storage}' already"]})
    if container.status != Container.Status.STOPPED:
        raise JobRefused(f"CT {container.ctid} is {container.status}; volumes move while it is stopped")
    require_space(access, [storage], address)
    params = {"volume": volume, "storage": storage, "delete": bool(delete)}
    return container_job(access, container, "move_volume", params, address)


def push_file(
    access: Access,
    container: Container,
    data: bytes,
    path: str,
    user: str | None = None,
    group: str | None = None,
    perms: str | None = None,
    address: str | None = None,
) -> Job:
    """Stage the bytes (webui.models.staging) and queue the push; the node resolves every path inside."""
    require(access, "VM.Config", container, address=address)
    errors = _file_errors(path, "path")
    for key, value in (("user", user), ("group", group)):
        if value and not OWNER.match(str(value)):
            errors[key] = [f"'{value}' is not a {key} name or numeric id"]
    if perms:
        try:
            parse_perms(perms)
        except EngineValidationError as exc:
            errors["perms"] = [str(exc).removeprefix("perms: ")]
    if len(data) > staging.MAX_BYTES:
        errors["file"] = [f"at most {staging.MAX_BYTES} bytes through the browser (use pct-style push on the node)"]
    if errors:
        raise ValidationError(errors)
    _running(container, "copying files")
    token, digest = staging.stage_upload(data)
    params = {
        "path": path,
        "user": user or None,
        "group": group or None,
        "perms": perms or None,
        "blob": token,
        "sha256": digest,
        "size": len(data),
    }
    return container_job(access, container, "push_file", params, address)


def pull_file(access: Access, container: Container, path: str, address: str | None = None) -> Job:
    require(access, "VM.Config", container, address=address)
    errors = _file_errors(path, "path")
    if errors:
        raise ValidationError(errors)
    _running(container, "copying files")
    return container_job(access, container, "pull_file", {"path": path}, address)


def pulled(access: Access, container: Container, job_id: int, address: str | None = None) -> dict:
    """What the user's own finished pull job staged: ``{"data", "info"}``."""
    require(access, "VM.Config", container, address=address)
    job = Job.objects.filter(pk=job_id, kind="pull_file", path=container.path, user=access.user).first()
    if job is None:
        raise ValidationError({"job": [f"no file read of yours with job {job_id} for CT {container.ctid}"]})
    if job.status != Job.Status.OK:
        raise JobRefused(f"job {job_id} is {job.status}: {job.message or 'not finished'}", job=job)
    staged = staging.download(job.pk)
    if staged is None:
        raise JobRefused(f"the file read by job {job_id} has expired; read it again")
    return staged


def _file_errors(path, key: str) -> dict:
    try:
        check_container_path(path if isinstance(path, str) else "", key)
    except EngineValidationError as exc:
        return {key: [str(exc).removeprefix(f"{key}: ")]}
    return {}
