"""Every change a user can ask for, checked for permission and validity, then queued as a job.

Pages and API views are thin: they parse the request, call one function here,
and show the job it returns.  ``PermissionDenied`` becomes 403,
``ValidationError`` 400 with field errors, ``JobRefused`` 409 (or 503 for an
offline node).
"""
from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction

from engine.config import ContainerConfig
from engine.errors import ValidationError as EngineValidationError
from webui.access import Access
from webui.forms.create import CreateRequest
from webui.jobs import JobRefused, cancel, submit
from webui.models import AuditEntry, Container, Job, Node

POWER_ACTIONS = {"start": "vzstart", "shutdown": "vzshutdown", "stop": "vzstop", "reboot": "vzreboot"}
# Keys a user edits through the Resources, Network and Options tabs (and the API).
EDITABLE_KEYS = {"hostname", "description", "cores", "cpulimit", "cpuunits", "memory", "swap", "pids", "ioweight",
                 "onboot", "startup", "protection", "tags", "nameserver", "searchdomain", "features", "cmode",
                 "tty", "console", *(f"net{i}" for i in range(10))}


def require(access: Access, privilege: str, obj=None, path: str = "/", address: str | None = None) -> None:
    """Refuse (and audit the refusal) unless the user holds ``privilege`` on ``obj`` or ``path``."""
    if access.can(privilege, obj, path):
        return
    where = obj.path if obj is not None else path
    user = access.user if access.user and access.user.is_authenticated else None
    AuditEntry.objects.create(user=user, username=getattr(user, "username", ""), action=f"denied {privilege}",
                              path=where, address=address, outcome="denied")
    raise PermissionDenied(f"permission denied: {privilege} on {where} is required")


def create_container(access: Access, data, address: str | None = None) -> Job:
    request = CreateRequest(data)
    if not request.is_valid():
        raise ValidationError(request.errors)
    node = request.node
    require(access, "VM.Allocate", path=node.path, address=address)
    try:
        with transaction.atomic():
            Container.objects.create(ctid=request.ctid, node=node, status=Container.Status.CREATING,
                                     hostname=request.options()["hostname"], config=request.options())
            job = submit("vzcreate", node, f"/ct/{request.ctid}", str(request.ctid), user=access.user,
                         params=request.job_params(), address=address)
    except IntegrityError:
        raise ValidationError({"ctid": [f"ID {request.ctid} is already in use"]}) from None
    return job


def _active_state(container: Container) -> None:
    if container.status == Container.Status.CREATING:
        raise JobRefused(f"CT {container.ctid} is still being created")


def power(access: Access, container: Container, action: str, params: dict | None = None,
          address: str | None = None) -> Job:
    if action not in POWER_ACTIONS:
        raise ValidationError({"action": [f"unknown action '{action}' (use {', '.join(POWER_ACTIONS)})"]})
    require(access, "VM.PowerMgmt", container, address=address)
    _active_state(container)
    params = dict(params or {})
    if action == "shutdown":
        timeout = params.get("timeout", 60)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 1 <= timeout <= 3600:
            raise ValidationError({"timeout": ["seconds between 1 and 3600"]})
        params = {"timeout": timeout, "force_stop": bool(params.get("force_stop", True))}
    else:
        params = {}
    return submit(POWER_ACTIONS[action], container.node, container.path, str(container.ctid), user=access.user,
                  params=params, address=address)


def destroy(access: Access, container: Container, force: bool = False, address: str | None = None) -> Job:
    require(access, "VM.Allocate", container, address=address)
    _active_state(container)
    if container.protected:
        raise JobRefused(f"CT {container.ctid} is protected; clear 'protection' in its options first")
    if container.status == Container.Status.RUNNING and not force:
        raise JobRefused(f"CT {container.ctid} is running; stop it first (or destroy with force)")
    return submit("vzdestroy", container.node, container.path, str(container.ctid), user=access.user,
                  params={"force": force}, address=address)


def update_config(access: Access, container: Container, changes: dict, delete: list[str] | None = None,
                  digest: str | None = None, address: str | None = None) -> Job:
    """Check every key with the engine's parser before queueing; network keys need VM.Config too."""
    require(access, "VM.Config", container, address=address)
    _active_state(container)
    delete = list(delete or [])
    errors: dict[str, list[str]] = {}
    if not isinstance(changes, dict) or not all(isinstance(k, str) for k in changes):
        raise ValidationError({"changes": ["an object of config keys to values"]})
    config = ContainerConfig(container.ctid)
    for key, value in changes.items():
        if key not in EDITABLE_KEYS:
            errors.setdefault(key, []).append("not a key that can be changed here")
            continue
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            errors.setdefault(key, []).append("give a string or a number")
            continue
        try:
            config.set(key, str(value))
            if key.startswith("net"):
                from engine.network.nics import parse_nic

                parse_nic(int(key[3:]), str(value))
        except EngineValidationError as exc:
            errors.setdefault(key, []).append(str(exc))
    for key in delete:
        if key not in EDITABLE_KEYS:
            errors.setdefault(key, []).append("not a key that can be deleted")
    if not changes and not delete:
        errors.setdefault("changes", []).append("nothing to change")
    if errors:
        raise ValidationError(errors)
    return submit("vzset", container.node, container.path, str(container.ctid), user=access.user,
                  params={"changes": {k: str(v) for k, v in changes.items()}, "delete": delete, "digest": digest},
                  address=address)


def template_job(access: Access, node: Node, kind: str, target: str, params: dict | None = None,
                 address: str | None = None) -> Job:
    """Download, build, remove a template, or refresh the catalog, on one node."""
    require(access, "Datastore.AllocateTemplate", node, address=address)
    return submit(kind, node, node.path, target, user=access.user, params=params or {}, address=address)


def cancel_job(access: Access, job: Job) -> None:
    """The job's owner, or anyone with Sys.Modify on the job's node, may cancel it."""
    if not (job.user_id == getattr(access.user, "id", None) or access.can("Sys.Modify", job.node)):
        raise PermissionDenied(f"permission denied: only the job's owner or Sys.Modify on {job.node.path} may "
                               "cancel it")
    cancel(job)
