"""Protection policies through the API without a node agent: bad input, rights, the backup part, the preview,
and the migration that gave each existing backup job a policy with its history."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django_celery_beat.models import PeriodicTask

from tests.webui.api_helpers import client_for, error_of, fresh_throttles  # noqa: F401 - fixture
from webui.api.serializers.protection import ProtectionPolicySerializer
from webui.models import AuditEntry, BackupSchedule, Container, Job, NotificationTarget, Pool, ProtectionPolicy

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(make_user, node):
    return client_for(make_user("pp-boss", superuser=True))


def test_bad_bodies_name_the_field_and_change_nothing(admin, node):
    NotificationTarget.objects.create(name="hook", kind="webhook", url="http://127.0.0.1:9/x")
    cases = [
        ({"name": "p", "snapshot_schedule": "mon 25:00"}, "snapshot_schedule"),
        ({"name": "p", "snapshot_pattern": "9lives%d"}, "snapshot_pattern"),
        ({"name": "p", "snapshot_pattern": "a%db%d"}, "snapshot_pattern"),
        ({"name": "p", "snapshot_expiry": "2 days"}, "snapshot_expiry"),
        ({"name": "p", "selection": "tag"}, "tag"),
        ({"name": "p", "selection": "tag", "tag": "Has Caps"}, "tag"),
        ({"name": "p", "selection": "include", "ctids": [4999]}, "ctids"),
        ({"name": "p", "selection": "pool", "pool": "nope"}, "pool"),
        ({"name": "p", "selection": "everything"}, "selection"),
        ({"name": "p", "targets": ["hook", "ghost"]}, "targets"),
        ({"name": "p", "snap_keep_last": -1}, "snap_keep_last"),
        ({"name": "two words"}, "name"),
        ({"name": "p", "backup": "daily"}, "backup"),
        ({"name": "p", "backup": {"keep_last": 2}}, "backup.schedule"),
        ({"name": "p", "backup": {"schedule": "daily", "selection": "all"}}, "backup"),
        ({"name": "p", "backup": {"schedule": "daily", "storage": "nowhere"}}, "backup.storage"),
    ]
    for body, field in cases:
        response = admin.post("/api/protection-policies/", body, format="json")
        assert response.status_code == 400, (body, response.content)
        assert field in error_of(response)["fields"], (body, response.json())
    for body, field in [
        ({"name": "m", "kind": "mail", "mail_to": "not-an-address"}, "mail_to"),
        ({"name": "w", "kind": "webhook", "url": "ftp://example.org/"}, "url"),
        ({"name": "w", "kind": "webhook", "url": "https://user:secret@example.org/"}, "url"),
        ({"name": "w", "kind": "sms"}, "kind"),
    ]:
        response = admin.post("/api/notification-targets/", body, format="json")
        assert response.status_code == 400 and field in error_of(response)["fields"], (body, response.content)
    assert not ProtectionPolicy.objects.exists() and not BackupSchedule.objects.exists()
    assert not PeriodicTask.objects.exists()


def test_changing_policies_needs_sys_modify(make_user, node):
    policy = ProtectionPolicy.objects.create(name="seen")
    auditor = client_for(make_user("pp-auditor", "Auditor", "/"))  # Sys.Audit: reads
    assert auditor.get("/api/protection-policies/").json()["results"][0]["name"] == "seen"
    assert auditor.post("/api/protection-policies/", {"name": "x"}, format="json").status_code == 403
    assert auditor.patch(f"/api/protection-policies/{policy.pk}/", {"enabled": False}, format="json").status_code == 403
    assert auditor.post(f"/api/protection-policies/{policy.pk}/run/").status_code == 403
    assert auditor.post("/api/notification-targets/", {"name": "x", "kind": "mail"}, format="json").status_code == 403
    stranger = client_for(make_user("pp-nobody"))
    assert stranger.get("/api/protection-policies/").status_code == 403
    assert ProtectionPolicy.objects.get().enabled and not Job.objects.exists()


def test_a_policys_backup_part_follows_its_selection_and_the_preview_merges_both(admin, node, settings):
    settings.CAISSON_BACKUP_CHECK_INTERVAL = 5
    Pool.objects.create(name="web")
    response = admin.post(
        "/api/protection-policies/",
        {
            "name": "web",
            "selection": "pool",
            "pool": "web",
            "snapshot_schedule": "hourly",
            "backup": {"schedule": "sat 03:00", "keep_daily": 7, "mode": "stop"},
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    policy = ProtectionPolicy.objects.get(pk=body["id"])
    job = policy.backup
    assert job.selection == "pool" and job.pool.name == "web" and job.keep_daily == 7 and job.mode == "stop"
    assert job.periodic_task.task == "caisson.backup.check" and job.next_due is not None
    assert body["backup"]["schedule"] == "sat 03:00" and body["backup"]["keep_daily"] == 7
    kinds = [r["kind"] for r in body["next_runs"]]
    assert kinds.count("snapshot") >= 4 and [r["time"] for r in body["next_runs"]] == sorted(
        r["time"] for r in body["next_runs"]
    )

    # A new selection is the backup job's too; backup null removes the job and its beat task.
    response = admin.patch(
        f"/api/protection-policies/{policy.pk}/",
        {"selection": "tag", "pool": None, "tag": "prod"},
        format="json",
    )
    assert response.status_code == 200, response.content
    job.refresh_from_db()
    assert job.selection == "tag" and job.tag == "prod" and job.pool is None
    task = job.periodic_task
    response = admin.patch(f"/api/protection-policies/{policy.pk}/", {"backup": None}, format="json")
    assert response.status_code == 200 and response.json()["backup"] is None
    assert not BackupSchedule.objects.exists() and not PeriodicTask.objects.filter(pk=task.pk).exists()
    assert AuditEntry.objects.filter(action="policy.update").count() == 2

    assert admin.delete(f"/api/protection-policies/{policy.pk}/").status_code == 204
    assert not ProtectionPolicy.objects.exists() and not PeriodicTask.objects.exists()


def test_a_backup_job_made_the_old_way_is_part_of_a_policy(admin, node):
    Container.objects.create(ctid=4400, node=node, status="stopped")
    response = admin.post(
        "/api/backup-schedules/", {"schedule": "02:00", "selection": "include", "ctids": [4400]}, format="json"
    )
    assert response.status_code == 201, response.content
    schedule = BackupSchedule.objects.get()
    policy = ProtectionPolicy.objects.get(backup=schedule)
    assert policy.name == f"backup-job-{schedule.pk}" and policy.selection == "include" and policy.ctids == [4400]
    assert admin.delete(f"/api/backup-schedules/{schedule.pk}/").status_code == 204
    assert not ProtectionPolicy.objects.exists()


def test_the_migration_gives_each_backup_job_a_policy_and_keeps_its_history(node):
    migration = importlib.import_module("webui.migrations.0011_policy_protection")
    pool = Pool.objects.create(name="db")
    jobs = [
        BackupSchedule.objects.create(schedule="02:00", selection="pool", pool=pool, comment="nightly"),
        BackupSchedule.objects.create(schedule="sun 04:00", selection="exclude", ctids=[4500], enabled=False),
    ]
    ProtectionPolicy.objects.create(name=f"backup-job-{jobs[1].pk}")  # a name already taken
    runs = [Job.objects.create(node=node, kind="vzdumpjob", path="/", target=str(j.pk), status="ok") for j in jobs]
    migration.adopt_backup_jobs(apps, None)
    first, second = (ProtectionPolicy.objects.get(backup=j) for j in jobs)
    assert (first.name, first.selection, first.pool, first.comment, first.enabled) == (
        f"backup-job-{jobs[0].pk}",
        "pool",
        pool,
        "nightly",
        True,
    )
    assert second.name == f"backup-job-{jobs[1].pk}-1" and second.ctids == [4500] and not second.enabled
    assert not first.snapshot_schedule and BackupSchedule.objects.count() == 2
    assert list(Job.objects.filter(kind="vzdumpjob").order_by("pk")) == runs
    # The policy's last runs are its backup job's runs.
    assert [r["id"] for r in ProtectionPolicySerializer(first).data["last_runs"]] == [runs[0].pk]
