"""Protection policies and notification targets (Datacenter -> Protection); ``Sys.Modify`` on ``/``, as backup jobs.

A policy is saved with its backup part in one transaction: ``backup`` given
as an object creates or changes the policy's backup job (its fields, checked
by the backup job form, with the policy's container selection); ``backup``
null removes the job (its past runs stay in the task history); left out, the
job keeps its fields and follows the policy's selection.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from webui.access import Access, audit, require
from webui.forms.protection import PolicyForm, TargetForm, backup_form
from webui.models import BackupSchedule, Job, NotificationTarget, ProtectionPolicy
from webui.models.queue import JobRefused

MISSING = object()


def _object(data, what: str):
    if hasattr(data, "getlist"):  # a form-encoded body (QueryDict): one value per key, the last given
        data = data.dict()
    if not hasattr(data, "get"):
        raise ValidationError({"non_field_errors": [f"a JSON object of {what} fields"]})
    return data


def save_policy(
    access: Access, data, policy: ProtectionPolicy | None = None, address: str | None = None
) -> ProtectionPolicy:
    """Create (``policy`` None) or change a policy; fields left out keep their value."""
    require(access, "Sys.Modify", path="/", address=address)
    data = dict(_object(data, "policy"))
    backup = data.pop("backup", MISSING)
    if backup not in (MISSING, None) and not isinstance(backup, dict):
        raise ValidationError({"backup": ["an object of backup job fields, or null for no backups"]})
    creating = policy is None
    form = PolicyForm(data, None if creating else ProtectionPolicy.objects.get(pk=policy.pk))
    if not form.is_valid():
        raise ValidationError(form.errors)
    with transaction.atomic():
        policy = form.save()
        if backup is None and policy.backup is not None:
            old, policy.backup = policy.backup, None
            policy.save(update_fields=["backup"])
            old.delete()
        elif backup is not None and (backup is not MISSING or policy.backup is not None):
            job = backup_form(policy, {} if backup is MISSING else backup)
            if not job.is_valid():
                raise ValidationError({f"backup.{k}": v for k, v in job.errors.items()})
            schedule = job.save()
            schedule.enabled = schedule.enabled and policy.enabled
            schedule.comment = schedule.comment or f"policy {policy.name}"
            schedule.save(update_fields=["enabled", "comment"])
            schedule.rearm()
            if policy.backup_id != schedule.pk:
                policy.backup = schedule
                policy.save(update_fields=["backup"])
        policy.rearm()
        audit(
            access,
            "policy.create" if creating else "policy.update",
            "/",
            address,
            policy=policy.pk,
            name=policy.name,
            snapshots=policy.snapshot_schedule,
            backups=policy.backup.schedule if policy.backup else "",
        )
    return policy


def adopt_backup_job(schedule: BackupSchedule) -> ProtectionPolicy:
    """A backup job made or changed through ``/api/backup-schedules/`` is part of a policy: its own, made
    here if it has none, whose selection follows the job's."""
    policy = getattr(schedule, "policy", None)
    if policy is None:
        name = f"backup-job-{schedule.pk}"
        while ProtectionPolicy.objects.filter(name=name).exists():
            name += "-1"
        policy = ProtectionPolicy(name=name, comment=f"made from backup job {schedule.pk}", backup=schedule)
    policy.selection, policy.ctids, policy.pool, policy.tag = (
        schedule.selection,
        list(schedule.ctids),
        schedule.pool,
        schedule.tag,
    )
    policy.save()
    policy.rearm()
    return policy


def delete_policy(access: Access, policy: ProtectionPolicy, address: str | None = None) -> None:
    require(access, "Sys.Modify", path="/", address=address)
    pk, name = policy.pk, policy.name
    with transaction.atomic():
        policy.delete()  # its beat task and its backup job; the snapshots it took stay
        audit(access, "policy.delete", "/", address, policy=pk, name=name)


def start_now(access: Access, selects, dispatch, none_selected: str, none_started: str, address=None) -> list[Job]:
    """A "Run now" (of a policy's snapshots or restore test, or of a backup job): ``dispatch()`` a job on each
    node, refused by name when ``selects()`` finds no container or no node could start one."""
    require(access, "Sys.Modify", path="/", address=address)
    if not selects():
        raise JobRefused(none_selected)
    jobs = dispatch()
    if not jobs:
        raise JobRefused(none_started)
    return jobs


def run_now(access: Access, policy: ProtectionPolicy, address: str | None = None) -> list[Job]:
    """The policy's snapshots now, outside their schedule, on every node with a selected container."""
    return start_now(
        access,
        policy.containers,
        lambda: policy.dispatch(user=access.user, address=address),
        f"policy {policy.name} selects no container on any node",
        f"policy {policy.name} could not start on any node (offline, or a run is still going on); see the audit log",
        address,
    )


def restore_test_now(access: Access, policy: ProtectionPolicy, address: str | None = None) -> list[Job]:
    """Prove the policy's newest archives now: a ``restoretest`` job on every node with a selected container."""
    return start_now(
        access,
        policy.containers,
        lambda: policy.dispatch(user=access.user, address=address, kind="restoretest"),
        f"policy {policy.name} selects no container on any node",
        f"policy {policy.name}: no restore test could start (nodes offline, or one is still going on); "
        "see the audit log",
        address,
    )


def save_target(
    access: Access, data, target: NotificationTarget | None = None, address: str | None = None
) -> NotificationTarget:
    """Create or change a target; ``headers`` ({name: value}, a value of null or "" removing one) changes only the
    headers it names. Their values are sealed at once and never audited nor answered, only their names."""
    require(access, "Sys.Modify", path="/", address=address)
    creating = target is None
    data = dict(_object(data, "notification target"))
    headers = data.pop("headers", None)
    form = TargetForm(data, target)
    if not form.is_valid():
        raise ValidationError(form.errors)
    with transaction.atomic():
        target = form.save(commit=False)
        if headers is not None:
            target.update_headers(headers)
        target.clean()
        target.save()
        audit(
            access,
            "notification.create" if creating else "notification.update",
            "/",
            address,
            target=target.name,
            kind=target.kind,
            headers=list(target.header_names),
        )
    return target


def delete_target(access: Access, target: NotificationTarget, address: str | None = None) -> None:
    require(access, "Sys.Modify", path="/", address=address)
    with transaction.atomic():
        name = target.name
        target.delete()
        audit(access, "notification.delete", "/", address, target=name)
