"""The datacenter's backup jobs (Proxmox's Datacenter -> Backup): save, delete, run now; ``Sys.Modify`` on ``/``.

The fields are checked by ``webui.forms.backups.ScheduleForm``, the same
form for the page and the API; a job's beat task follows it in the same
transaction.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from webui.access import Access, audit, require
from webui.actions.protection import adopt_backup_job, start_now
from webui.forms.backups import ScheduleForm
from webui.models import BackupSchedule, Job


def save_schedule(
    access: Access, data, schedule: BackupSchedule | None = None, address: str | None = None
) -> BackupSchedule:
    """Create (``schedule`` None) or change a backup job; fields left out keep their value."""
    require(access, "Sys.Modify", path="/", address=address)
    if not hasattr(data, "get"):
        raise ValidationError({"non_field_errors": ["a JSON object of backup job fields"]})
    creating = schedule is None
    form = ScheduleForm(data, None if creating else BackupSchedule.objects.get(pk=schedule.pk))
    if not form.is_valid():
        raise ValidationError(form.errors)
    with transaction.atomic():
        schedule = form.save()
        schedule.rearm()
        adopt_backup_job(schedule)  # every backup job is part of a protection policy
        audit(
            access,
            "backupjob.create" if creating else "backupjob.update",
            "/",
            address,
            schedule=schedule.pk,
            text=schedule.schedule,
            enabled=schedule.enabled,
        )
    return schedule


def delete_schedule(access: Access, schedule: BackupSchedule, address: str | None = None) -> None:
    require(access, "Sys.Modify", path="/", address=address)
    pk = schedule.pk
    with transaction.atomic():
        policy = getattr(schedule, "policy", None)
        schedule.delete()  # and its beat task
        if policy is not None and not policy.snapshot_schedule:
            policy.delete()  # the policy was only this job; one with scheduled snapshots stays
        audit(access, "backupjob.delete", "/", address, schedule=pk)


def run_now(access: Access, schedule: BackupSchedule, address: str | None = None) -> list[Job]:
    """Proxmox's "Run now": a run on every node the job covers, outside its schedule."""
    return start_now(
        access,
        schedule.run_nodes,
        lambda: schedule.dispatch(user=access.user, address=address),
        f"backup job {schedule.pk} selects no container on any node",
        f"backup job {schedule.pk} could not start on any node (offline, or a run is still "
        "going on); see the audit log",
        address,
    )
