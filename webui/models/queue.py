"""Queue jobs for node agents: the web tier's only way to change anything on a node.

A model-level operation (a ``Job`` row, its audit row, and the message to the
node's queue once both are committed), so that the actions of the web tier
and the beat check of ``tasks/`` queue jobs the same way without ``tasks``
importing the web tier's actions.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from webui.access import ACTING_TOKEN
from webui.live import publish
from webui.models.access import AuditEntry
from webui.models.inventory import Node
from webui.models.jobs import Job


class JobRefused(Exception):
    """The job cannot be queued; the message says why and what to do (HTTP 409 or 503)."""

    def __init__(self, message: str, status: int = 409, job: Job | None = None):
        super().__init__(message)
        self.status = status
        self.job = job


# job kind -> Celery task name run by the node agent (tasks/)
TASKS = {
    "vzcreate": "caisson.container.create",
    "vzstart": "caisson.container.start",
    "vzshutdown": "caisson.container.shutdown",
    "vzstop": "caisson.container.stop",
    "vzreboot": "caisson.container.reboot",
    "vzdestroy": "caisson.container.destroy",
    "vzset": "caisson.container.set",
    "vzclone": "caisson.container.clone",
    "vzsnapshot": "caisson.container.snapshot",
    "vzrollback": "caisson.container.rollback",
    "vzdelsnapshot": "caisson.container.delete_snapshot",
    "vzresize": "caisson.container.resize",
    "vzsuspend": "caisson.container.suspend",  # tasks/machine.py
    "vzresume": "caisson.container.resume",
    "vztemplate": "caisson.container.template",
    "vzupgrade": "caisson.container.upgrade",  # the container's packages, after a safety snapshot
    "vzrebuild": "caisson.container.rebuild",  # a change of template, after a safety snapshot
    "move_volume": "caisson.container.move_volume",
    "vzmigrate": "caisson.container.migrate",  # tasks/migrate.py: the source's side
    "vzmigrate_in": "caisson.container.migrate_in",  # the target's side, queued by the source's job
    "push_file": "caisson.container.push_file",
    "pull_file": "caisson.container.pull_file",
    "vzmktemplate": "caisson.container.make_template",  # a custom template from a stopped container
    "aptupdate": "caisson.templates.update",
    "download": "caisson.templates.download",
    "tmplbuild": "caisson.templates.build",
    "tmplremove": "caisson.templates.remove",
    "tmplsources": "caisson.templates.sources",
    "ociregistrypull": "caisson.templates.oci_pull",  # Proxmox's task type for the same pull
    "ocisettings": "caisson.templates.oci_settings",
    "noderesync": "caisson.node.resync",
    "startall": "caisson.node.startall",  # the node's onboot containers in startup order (tasks/boot.py)
    "stopall": "caisson.node.stopall",
    "bridgeset": "caisson.network.set",  # the node's Network panel (tasks/network.py)
    "bridgedel": "caisson.network.delete",
    "netapply": "caisson.network.apply",
    "fwset": "caisson.firewall.set",  # a firewall file written and applied (tasks/firewall.py)
    "storageadd": "caisson.storage.add",  # storage.cfg changed on the node (tasks/storages.py)
    "storagedel": "caisson.storage.remove",
    "backupdl": "caisson.storage.download",  # an archive streamed to the browser (webui/filestream.py)
    "tmplupload": "caisson.templates.upload",  # a template sent by the browser, chunk by chunk
}
# Kinds a double click must not queue twice for the same target.
EXCLUSIVE = {
    "vzcreate",
    "vzstart",
    "vzshutdown",
    "vzstop",
    "vzreboot",
    "vzdestroy",
    "vzsuspend",
    "vzresume",
    "vztemplate",
    "vzupgrade",
    "vzrebuild",
    "move_volume",
    "vzmigrate",
    "download",
    "tmplbuild",
    "ociregistrypull",
    "aptupdate",
    "startall",
    "stopall",
    "bridgeset",
    "bridgedel",
    "netapply",
}


def _fernet(purpose: bytes):
    """The key sealing a secret the web tier stores or hands to the node agent (a registry password, a webhook's
    header values): derived from the installation's SECRET_KEY, which both read (``webui.keys``), and the
    secret's purpose (a token sealed for one use does not open as another); never the key itself."""
    import base64
    import hashlib

    from cryptography.fernet import Fernet
    from django.conf import settings

    digest = hashlib.sha256(purpose + b"\0" + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


REGISTRY = b"caisson registry credentials"


def seal_secret(text: str, purpose: bytes = REGISTRY) -> str:
    return _fernet(purpose).encrypt(text.encode()).decode()


def unseal_secret(token: str, purpose: bytes = REGISTRY) -> str:
    return _fernet(purpose).decrypt(token.encode()).decode()


def protect_secrets(params: dict) -> dict:
    """Root's clear password becomes its SHA-512 crypt hash (what the container's /etc/shadow holds), so it is
    never queued, stored nor audited in clear; a bad one is refused here, naming the field. A registry password
    (an image pull's) is sealed for the node agent (``registry_password_sealed``), which needs it in clear."""
    from engine.credentials import hash_password, validate_password
    from engine.errors import ValidationError as EngineValidationError

    if params.get("registry_password"):
        sealed = seal_secret(params["registry_password"])
        params = {**{k: v for k, v in params.items() if k != "registry_password"}, "registry_password_sealed": sealed}

    if not params.get("password"):
        return {k: v for k, v in params.items() if k != "password"}
    try:
        hashed = hash_password(validate_password(params["password"]))
    except EngineValidationError as exc:
        raise ValidationError({"password": [str(exc).removeprefix("password: ")]}) from None
    return {**{k: v for k, v in params.items() if k != "password"}, "password_hash": hashed}


def audited_params(params: dict) -> dict:
    """A job's parameters as the audit log keeps them: whether a password was set, how many SSH keys were given
    (not the keys: the log's text stays free of them), the sizes of provisioning documents, everything else as
    it is."""
    shown = dict(params)
    if "password_hash" in shown:
        shown["password_hash"] = "set" if shown["password_hash"] else None
    if "registry_password_sealed" in shown:
        shown["registry_password_sealed"] = "set"
    if shown.get("ssh_public_keys"):
        count = sum(1 for line in shown["ssh_public_keys"].splitlines() if line.strip() and not line.startswith("#"))
        shown["ssh_public_keys"] = f"{count} key(s)"
    if isinstance(shown.get("provision"), dict):  # cloud-init user data may hold secrets: only their sizes
        shown["provision"] = {k: f"{len(str(v).encode())} bytes" for k, v in shown["provision"].items() if v}
    return shown


def submit(
    kind: str, node: Node, path: str, target: str, user=None, params: dict | None = None, address: str | None = None
) -> Job:
    """Record a job and hand it to its node's queue once the record is committed."""
    from tasks.celery import app  # the Celery app only, not the node-side task code

    if kind not in TASKS:
        raise ValueError(f"unknown job kind {kind}")
    params = protect_secrets(params or {})
    token = ACTING_TOKEN.get()
    if token is not None and token.privsep and user is not None and token.user_id == user.pk:
        params["api_token"] = token.pk  # the node re-checks this token's rights (webui.access.job_access)
    if not node.online:
        raise JobRefused(
            f"node '{node.name}' is offline (no heartbeat for {_ago(node)}); "
            "start its agent or wait for it to come back",
            status=503,
        )
    with transaction.atomic():
        Node.objects.select_for_update().get(pk=node.pk)  # serialise the duplicate check below per node
        if kind in EXCLUSIVE:
            existing = Job.objects.filter(kind=kind, path=path, target=target, status__in=Job.ACTIVE).first()
            if existing:
                raise JobRefused(
                    f"a {kind} job for {target or path} is already {existing.status} (job {existing.pk})", job=existing
                )
        job = Job.objects.create(
            node=node,
            kind=kind,
            path=path,
            target=target,
            params=params or {},
            user=user if user and user.is_authenticated else None,
        )
        AuditEntry.objects.create(
            user=job.user,
            username=getattr(user, "username", ""),
            action=kind,
            path=path,
            address=address,
            detail={"job": job.pk, "target": target, "params": audited_params(params)},
        )
        task_name = TASKS[kind]
        transaction.on_commit(lambda: app.send_task(task_name, args=[job.pk], queue=node.queue))
        publish([path], {"type": "job", "job": job.summary()})
    return job


def cancel(job: Job) -> None:
    """Ask the running job to stop at its next check; a queued one is cancelled at once."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        if not job.active:
            raise JobRefused(f"job {job.pk} has already ended ({job.status})")
        job.cancel_requested = True
        if job.status == Job.Status.QUEUED:
            job.status, job.ended, job.message = Job.Status.CANCELLED, timezone.now(), "cancelled before it started"
        job.save(update_fields=["cancel_requested", "status", "ended", "message"])
        publish([job.path], {"type": "job", "job": job.summary()})


def _ago(node: Node) -> str:
    if not node.last_seen:
        return "never seen"
    return f"{int((timezone.now() - node.last_seen).total_seconds())} s"


# Backups and restores (tasks/backups.py): one container, an archive, and the runs of backup jobs.
TASKS.update(
    {
        "vzdump": "caisson.backup.vzdump",
        "vzrestore": "caisson.backup.restore",
        "vzverify": "caisson.backup.verify",
        "vzbackupdelete": "caisson.backup.delete",
        "vzprotect": "caisson.backup.protect",
        "vzdumpjob": "caisson.backup.run",
    }
)
EXCLUSIVE |= {"vzdump", "vzrestore", "vzbackupdelete", "vzdumpjob"}
TASKS["snapshotjob"] = "caisson.protection.run"  # a protection policy's scheduled snapshots on one node
TASKS["restoretest"] = "caisson.protection.restore_test"  # a policy's archives restored, booted and checked
EXCLUSIVE |= {"snapshotjob", "restoretest"}
