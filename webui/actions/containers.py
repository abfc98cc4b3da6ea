"""A container's actions: create, power, destroy, config changes, snapshots, clone, resize.

Each checks the user's rights and the input, then queues one job.
``PermissionDenied`` becomes 403, ``ValidationError`` 400 with field errors,
``JobRefused`` 409 (or 503 for an offline node), in every caller alike.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from engine.config import ConfigSection, ContainerConfig
from engine.errors import ValidationError as EngineValidationError
from engine.root_settings import root_equivalent, root_equivalent_changes, section_of
from webui.access import Access, require, require_space, require_superuser_for
from webui.forms.create import CreateRequest
from webui.models import Container, Job
from webui.models.inventory import CTID_MAX, CTID_MIN
from webui.models.queue import JobRefused, submit
from webui.nic_rights import check_nic_rights

POWER_ACTIONS = {"start": "vzstart", "shutdown": "vzshutdown", "stop": "vzstop", "reboot": "vzreboot"}
# Keys a user edits through the Resources, Network and Options tabs (and the API).
EDITABLE_KEYS = {
    "hostname",
    "description",
    "cores",
    "cpulimit",
    "cpuunits",
    "memory",
    "swap",
    "pids",
    "ioweight",
    "cpuset",
    "onboot",
    "startup",
    "protection",
    "tags",
    "nameserver",
    "searchdomain",
    "features",
    "cmode",
    "tty",
    "console",
    "timezone",
    "hookscript",  # root-equivalent: superusers only (engine.root_settings)
    *(f"net{i}" for i in range(10)),
    *(f"mp{i}" for i in range(256)),
    *(f"dev{i}" for i in range(256)),  # root-equivalent, as devN is root@pam's in Proxmox
}


def storage_of(volume) -> str | None:
    """The storage of a volume (``<storage>:<volume or GiB>``); None for a host path."""
    text = str(volume or "")
    return None if text.startswith("/") or ":" not in text else text.partition(":")[0]


def mirror_section(container: Container) -> ConfigSection:
    """The container's config as the node last reported it (the mirror), as a config section."""
    return ConfigSection(values={k: str(v) for k, v in (container.config or {}).items() if k != "description"})


def create_container(access: Access, data, address: str | None = None, extra: dict | None = None) -> Job:
    """The wizard's fields in ``data``; ``extra``: further config keys (``EDITABLE_KEYS``), as Proxmox's create."""
    unknown = sorted(set(extra or {}) - EDITABLE_KEYS)
    if unknown:
        raise ValidationError({key: ["not a key that can be set at create"] for key in unknown})
    request = CreateRequest(data, extra)
    if not request.is_valid():
        raise ValidationError(request.errors)
    node = request.node
    require(access, "VM.Allocate", path=node.path, address=address)
    require_superuser_for(access, root_equivalent(section_of(request.options())), f"/ct/{request.ctid}", address)
    require_space(access, [request.data("disk")["storage"]], address)
    nics = {k: v for k, v in request.options().items() if k.startswith("net")}
    try:
        check_nic_rights(access, node, request.ctid, nics, address=address)
    except ValidationError as exc:  # the wizard's field is "bridge"
        raise ValidationError({"bridge": exc.message_dict.get("net0", [])}) from None
    params = request.job_params()
    try:
        with transaction.atomic():
            Container.objects.create(
                ctid=request.ctid,
                node=node,
                status=Container.Status.CREATING,
                hostname=request.options()["hostname"],
                config=request.options(),
                source_template=str(params.get("template", "")).removeprefix("local:vztmpl/")[:255],
            )
            job = submit(
                "vzcreate",
                node,
                f"/ct/{request.ctid}",
                str(request.ctid),
                user=access.user,
                params=params,
                address=address,
            )
    except IntegrityError:
        raise ValidationError({"ctid": [f"ID {request.ctid} is already in use"]}) from None
    return job


def _active_state(container: Container) -> None:
    if container.status == Container.Status.CREATING:
        raise JobRefused(f"CT {container.ctid} is still being created")


def power(
    access: Access, container: Container, action: str, params: dict | None = None, address: str | None = None
) -> Job:
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
    return container_job(access, container, POWER_ACTIONS[action], params, address)


def destroy(access: Access, container: Container, force: bool = False, address: str | None = None) -> Job:
    require(access, "VM.Allocate", container, address=address)
    if (
        container.status == Container.Status.CREATING
        and Job.objects.filter(path=container.path, status__in=Job.ACTIVE).exists()
    ):
        raise JobRefused(f"CT {container.ctid} is still being created")
    # With no job running, a container left "creating" is an interrupted create: destroying it cleans up.
    if container.protected:
        raise JobRefused(f"CT {container.ctid} is protected; clear 'protection' in its options first")
    if container.status == Container.Status.RUNNING and not force:
        raise JobRefused(f"CT {container.ctid} is running; stop it first (or destroy with force)")
    return container_job(access, container, "vzdestroy", {"force": force}, address)


def update_config(
    access: Access,
    container: Container,
    changes: dict,
    delete: list[str] | None = None,
    digest: str | None = None,
    address: str | None = None,
    risky: bool = False,
) -> Job:
    """Check every key with the engine's parser before queueing; network keys need VM.Config too.  ``risky``:
    the node takes a safety snapshot first (``tasks.safety``), which needs VM.Snapshot too."""
    require(access, "VM.Config", container, address=address)
    _active_state(container)
    if digest and container.digest and digest != container.digest:
        raise JobRefused(f"CT {container.ctid}'s config was changed since it was read; reload it and retry")
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
    _check_config_rights(access, container, changes, delete, address)
    if risky:
        require(access, "VM.Snapshot", container, address=address)
    nics = {k: v for k, v in changes.items() if k.startswith("net")}
    check_nic_rights(
        access, container.node, container.ctid, nics, old=container.config or {}, obj=container, address=address
    )
    return container_job(
        access,
        container,
        "vzset",
        {"changes": {k: str(v) for k, v in changes.items()}, "delete": delete, "digest": digest}
        | ({"risky": True} if risky else {}),
        address,
    )


def _check_config_rights(
    access: Access, container: Container, changes: dict, delete: list[str], address: str | None
) -> None:
    """What a valid change needs beyond VM.Config: a superuser for root-equivalent settings, VM.Allocate to
    turn nesting on or off (Proxmox's rule), and Datastore.AllocateSpace where a mount point goes."""
    before = mirror_section(container)
    after = ConfigSection(values={k: v for k, v in before.values.items() if k not in delete})
    after.values.update({k: str(v).strip() for k, v in changes.items() if k != "description"})
    require_superuser_for(access, root_equivalent_changes(before, after), container.path, address)
    if (before.get("features") or {}).get("nesting") != (after.get("features") or {}).get("nesting"):
        require(access, "VM.Allocate", container, address=address)
    require_space(
        access,
        [storage_of(after.get(k).get("volume")) for k in changes if k.startswith("mp") and k[2:].isdigit()],
        address,
    )


def snapshot(
    access: Access, container: Container, operation: str, name: str, description: str = "", address: str | None = None
) -> Job:
    """Take (``snapshot``), roll back to (``rollback``) or delete (``delete``) the snapshot ``name``."""
    from engine.storage.base import check_snapshot_name

    kinds = {"snapshot": "vzsnapshot", "rollback": "vzrollback", "delete": "vzdelsnapshot"}
    if operation not in kinds:
        raise ValidationError({"operation": [f"unknown operation '{operation}' (use {', '.join(kinds)})"]})
    require(access, "VM.Snapshot", container, address=address)
    _active_state(container)
    try:
        check_snapshot_name(name if isinstance(name, str) else "")
    except EngineValidationError as exc:
        raise ValidationError({"name": [str(exc)]}) from None
    known = {s.get("name") for s in container.snapshots}
    if operation == "snapshot" and name in known:
        raise ValidationError({"name": [f"CT {container.ctid} already has a snapshot '{name}'"]})
    if operation != "snapshot" and name not in known:
        raise ValidationError({"name": [f"CT {container.ctid} has no snapshot '{name}'"]})
    if not isinstance(description, str) or len(description) > 8192:
        raise ValidationError({"description": ["text of at most 8192 characters"]})
    return container_job(access, container, kinds[operation], {"name": name, "description": description}, address)


def clone(
    access: Access,
    container: Container,
    newid,
    snapshot_name: str | None = None,
    full: bool = False,
    storage: str | None = None,
    hostname: str | None = None,
    address: str | None = None,
) -> Job:
    """A new container from this one (linked from a snapshot where the storage can); reserves the new ID."""
    from engine.config import check_hostname

    require(access, "VM.Clone", container, address=address)
    require(access, "VM.Allocate", path=container.node.path, address=address)
    _active_state(container)
    errors: dict[str, list[str]] = {}
    try:
        newid = int(newid)
        if not CTID_MIN <= newid <= CTID_MAX:
            raise ValueError
    except (TypeError, ValueError):
        errors["newid"] = [f"an ID between {CTID_MIN} and {CTID_MAX}"]
    if hostname:
        try:
            check_hostname(hostname)
        except EngineValidationError as exc:
            errors["hostname"] = [str(exc)]
    if snapshot_name and snapshot_name not in {s.get("name") for s in container.snapshots}:
        errors["snapshot"] = [f"CT {container.ctid} has no snapshot '{snapshot_name}'"]
    if errors:
        raise ValidationError(errors)
    source = mirror_section(container)
    # The node checks the section it clones (a snapshot's too); a clone of a privileged container is privileged.
    require_superuser_for(
        access,
        root_equivalent(source)
        if not snapshot_name
        else {k: v for k, v in root_equivalent(source).items() if k == "unprivileged"},
        f"/ct/{newid}",
        address,
    )
    require_space(
        access,
        [storage]
        if storage
        else [
            storage_of(source.get(k).get("volume"))
            for k in source.values
            if k == "rootfs" or k.startswith("mp") and k[2:].isdigit()
        ],
        address,
    )
    params = {
        "newid": newid,
        "snapshot": snapshot_name or None,
        "full": bool(full),
        "storage": storage or None,
        "hostname": hostname or None,
    }
    try:
        with transaction.atomic():
            Container.objects.create(
                ctid=newid,
                node=container.node,
                status=Container.Status.CREATING,
                hostname=hostname or container.hostname,
            )
            return container_job(access, container, "vzclone", params, address)
    except IntegrityError:
        raise ValidationError({"newid": [f"ID {newid} is already in use"]}) from None


def resize(access: Access, container: Container, disk: str, size: str, address: str | None = None) -> Job:
    """Grow a disk; the node refuses a shrink with a clear message too, this catches the obvious cases first."""
    require(access, "VM.Config", container, address=address)
    _active_state(container)
    errors = {}
    if not isinstance(disk, str) or not re.fullmatch(r"rootfs|mp\d{1,3}", disk):
        errors["disk"] = ["rootfs or mpN"]
    if not isinstance(size, str) or not re.fullmatch(r"\+?\d+(\.\d+)?[KMGT]?", size.strip()):
        errors["size"] = ["a size such as 8G (the new size) or +2G (grow by)"]
    if errors:
        raise ValidationError(errors)
    if disk not in container.config:
        raise ValidationError({"disk": [f"CT {container.ctid} has no {disk}"]})
    volume = mirror_section(container).get(disk).get("volume")
    if storage_of(volume) is None:
        raise ValidationError({"disk": [f"{disk} is a host path ({volume}), not a volume; it has no size here"]})
    require_space(access, [storage_of(volume)], address)
    return container_job(access, container, "vzresize", {"disk": disk, "size": size.strip()}, address)


def container_job(access: Access, container: Container, kind: str, params: dict, address: str | None) -> Job:
    """Queue ``kind`` on the container's node, on its path, as the acting user."""
    return submit(
        kind, container.node, container.path, str(container.ctid), user=access.user, params=params, address=address
    )


def make_template(access: Access, container: Container, name: str, address: str | None = None) -> Job:
    """A custom template from a stopped container (``pct``'s vzdump-then-template, as the engine's
    ``make-template``): VM.Allocate on the container (its whole file system is copied) and
    Datastore.AllocateTemplate on its node (the store grows)."""
    from engine.templates.entry import check_template_name

    require(access, "VM.Allocate", container, address=address)
    require(access, "Datastore.AllocateTemplate", container.node, address=address)
    name = (name or "").strip()
    if name and not name.endswith(".tar.zst"):
        name += ".tar.zst"
    try:
        check_template_name(name)
    except EngineValidationError as exc:
        raise ValidationError({"name": [str(exc)]}) from None
    if container.status != Container.Status.STOPPED:
        raise JobRefused(f"CT {container.ctid} is {container.status}; stop it before making a template of it")
    return container_job(access, container, "vzmktemplate", {"name": name}, address)
