"""Backups through the API without a node agent: backup jobs and their beat tasks, and refusals of bad input."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from rest_framework.test import APIClient

from webui.models import AuditEntry, BackupArchive, BackupSchedule, Container, Job

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_api(make_user, node):
    client = APIClient()
    client.force_authenticate(make_user("bk-admin", superuser=True))
    return client


@pytest.fixture
def archive(node):
    Container.objects.create(ctid=4310, node=node, status="running", hostname="src")
    return BackupArchive.objects.create(
        node=node,
        storage="local",
        ctid=4310,
        size=1234,
        format="zstd",
        name="vzdump-lxc-4310-2026_01_02-03_04_05.tar.zst",
        time=timezone.now(),
    )


def error(response) -> dict:
    return response.json()["error"]


def test_a_backup_job_owns_its_beat_task_through_create_change_and_delete(admin_api, node, settings):
    settings.CAISSON_BACKUP_CHECK_INTERVAL = 7
    Container.objects.create(ctid=4300, node=node, status="stopped")
    response = admin_api.post(
        "/api/backup-schedules/",
        {
            "schedule": "mon..fri 02:30",
            "selection": "include",
            "ctids": [4300],
            "keep_last": 3,
            "keep_daily": 7,
            "mail_to": "ops@example.org",
            "mail_when": "failure",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    schedule = BackupSchedule.objects.get(pk=body["id"])
    task = schedule.periodic_task
    assert (task.task, task.enabled, task.interval.every, task.queue) == ("caisson.backup.check", True, 7, node.queue)
    assert task.kwargs == f'{{"schedule": {schedule.pk}}}'
    due = schedule.next_due
    assert due > timezone.now() and (due.hour, due.minute, due.second) == (2, 30, 0) and due.weekday() < 5
    assert len(body["next_runs"]) == 5 and datetime.fromisoformat(body["next_runs"][0]) == due

    response = admin_api.patch(f"/api/backup-schedules/{schedule.pk}/", {"enabled": False}, format="json")
    assert response.status_code == 200, response.content
    task.refresh_from_db()
    assert not task.enabled and response.json()["next_runs"] == []
    response = admin_api.patch(
        f"/api/backup-schedules/{schedule.pk}/", {"enabled": True, "schedule": "15 4 * * *"}, format="json"
    )
    task.refresh_from_db()
    schedule.refresh_from_db()
    assert task.enabled and (schedule.next_due.hour, schedule.next_due.minute) == (4, 15)
    assert schedule.keep_last == 3 and schedule.mail_when == "failure"  # untouched by a partial change

    assert admin_api.delete(f"/api/backup-schedules/{schedule.pk}/").status_code == 204
    assert not PeriodicTask.objects.filter(pk=task.pk).exists() and not BackupSchedule.objects.exists()
    assert AuditEntry.objects.filter(action="backupjob.delete").exists()


@pytest.mark.parametrize(
    ("data", "field", "text"),
    [
        ({"schedule": "mon..fri 25:00"}, "schedule", "hour 25 is outside 0..23"),
        ({"schedule": "0 2 * * * *"}, "schedule", "unexpected"),
        ({"schedule": "61 2 * * *"}, "schedule", "minute 61 is outside 0..59"),
        ({"schedule": "daily", "selection": "include", "ctids": [4999]}, "ctids", "CT 4999 does not exist"),
        ({"schedule": "daily", "storage": "nowhere"}, "storage", "storage 'nowhere' does not exist"),
        ({"schedule": "daily", "keep_last": -1}, "keep_last", "keep-last must be 0 or more"),
        ({"schedule": "daily", "mail_to": "not an address"}, "mail_to", "is not an e-mail address"),
        ({"schedule": "daily", "mode": "fast"}, "mode", "'fast' is not one of"),
    ],
)
def test_a_bad_backup_job_is_refused_with_its_field_and_changes_nothing(admin_api, data, field, text):
    response = admin_api.post("/api/backup-schedules/", data, format="json")
    assert response.status_code == 400, response.content
    messages = " ".join(error(response)["fields"].get(field, []))
    assert text in messages, error(response)
    assert not BackupSchedule.objects.exists() and not PeriodicTask.objects.filter(task="caisson.backup.check").exists()


def test_preview_shows_next_runs_or_what_is_wrong(admin_api):
    response = admin_api.get("/api/backup-schedules/preview/", {"schedule": "sat 03:00", "count": 3})
    runs = [datetime.fromisoformat(t) for t in response.json()["next_runs"]]
    assert len(runs) == 3 and all(r.weekday() == 5 and r.hour == 3 for r in runs)
    assert runs[1] - runs[0] == timedelta(days=7)
    response = admin_api.get("/api/backup-schedules/preview/", {"schedule": "sat 03:61"})
    assert response.status_code == 400 and "minute 61 is outside 0..59" in error(response)["message"]


def test_bad_backup_and_restore_requests_are_refused_and_queue_nothing(admin_api, archive, node):
    url = "/api/containers/4310/backups/"
    response = admin_api.post(url, {"storage": "nowhere"}, format="json")
    assert response.status_code == 400 and "does not exist" in error(response)["fields"]["storage"][0]
    response = admin_api.post(url, {"mode": "hot"}, format="json")
    assert response.status_code == 400 and "mode" in error(response)["fields"]
    assert admin_api.post("/api/containers/4399/backups/", {}, format="json").status_code == 404

    restore = f"/api/backups/{archive.pk}/restore/"
    response = admin_api.post(restore, {"ctid": 4310, "force": True}, format="json")
    assert response.status_code == 409 and "is running; stop it before restoring over it" in error(response)["message"]
    response = admin_api.post(restore, {"ctid": 4310}, format="json")
    assert response.status_code == 409 and "already exists" in error(response)["message"]
    response = admin_api.post(restore, {"ctid": 12}, format="json")
    assert response.status_code == 400 and "ctid" in error(response)["fields"]

    BackupArchive.objects.filter(pk=archive.pk).update(protected=True)
    response = admin_api.delete(f"/api/backups/{archive.pk}/")
    assert response.status_code == 409 and "protected" in error(response)["message"]
    assert not Job.objects.exists()
    assert list(Container.objects.values_list("ctid", flat=True)) == [4310]  # no placeholder was left


def test_backup_needs_vm_backup_and_queues_a_job(admin_api, archive, make_user, node):
    operator = APIClient()
    operator.force_authenticate(make_user("bk-op", "Operator", "/"))
    response = operator.post("/api/containers/4310/backups/", {}, format="json")
    assert response.status_code == 403 and "VM.Backup" in error(response)["message"]
    assert operator.post("/api/backup-schedules/", {"schedule": "daily"}, format="json").status_code == 403
    # Seeing an archive needs VM.Backup on its container ID besides Datastore.Audit on its storage.
    assert operator.get("/api/backups/").json()["results"] == []
    backer = APIClient()
    backer.force_authenticate(make_user("bk-backer", "ContainerAdmin", "/"))
    assert [a["name"] for a in backer.get("/api/backups/").json()["results"]] == [archive.name]
    stranger = APIClient()
    stranger.force_authenticate(make_user("bk-nobody"))
    assert stranger.get("/api/backups/").json()["results"] == []

    response = admin_api.post(
        "/api/containers/4310/backups/",
        {"mode": "suspend", "compress": "gzip", "exclude": ["/var/cache"], "protected": True},
        format="json",
    )
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["job"]["id"])
    assert (job.kind, job.path, job.target) == ("vzdump", "/ct/4310", "4310")
    assert job.params == {
        "storage": "local",
        "mode": "suspend",
        "compress": "gzip",
        "exclude": ["/var/cache"],
        "notes": "",
        "protected": True,
    }
    again = admin_api.post("/api/containers/4310/backups/", {}, format="json")
    assert again.status_code == 409 and error(again)["job"] == job.pk  # a double click queues one backup


def test_the_backup_pages_save_a_job_with_its_beat_task_and_show_the_tab(client, make_user, archive, node):
    from django_celery_beat.models import PeriodicTask

    client.force_login(make_user("bk-page", superuser=True))
    fetch = {"HTTP_X_REQUESTED_WITH": "fetch"}
    bad = client.post("/datacenter/backup/save", {"schedule": "sun 7:99", "storage": "local"}, **fetch)
    assert bad.status_code == 400 and "minute 99 is outside 0..59" in bad.json()["error"]["fields"]["schedule"][0]
    assert not BackupSchedule.objects.exists()
    saved = client.post(
        "/datacenter/backup/save",
        {
            "schedule": "sun 07:15",
            "storage": "local",
            "enabled": "1",
            "selection": "include",
            "ctids": "4310",
            "keep_weekly": "4",
            "nodes": [node.name],
            "mail_when": "always",
        },
        **fetch,
    )
    assert saved.status_code == 200, saved.content
    schedule = BackupSchedule.objects.get()
    assert schedule.ctids == [4310] and schedule.keep_weekly == 4 and list(schedule.nodes.all()) == [node]
    assert PeriodicTask.objects.get(pk=schedule.periodic_task_id).enabled

    page = client.get("/datacenter/backup/").content.decode()
    assert "sun 07:15" in page and "keep_weekly=4" in page and 'id="schedule-form"' in page
    edit = client.get(f"/datacenter/backup/{schedule.pk}/").content.decode()
    assert 'name="keep_weekly" type="number" min="0" value="4"' in edit and "Next runs" in edit
    preview = client.get("/datacenter/backup/preview", {"schedule": "*/15"}).json()
    assert len(preview["next_runs"]) == 5
    assert client.get("/datacenter/backup/preview", {"schedule": "every day"}).status_code == 400

    tab = client.get("/ct/4310/backups/fragment").content.decode()
    assert archive.name in tab and f'action="/backups/{archive.pk}/restore"' in tab and "Backup now" in tab
    refused = client.post(f"/backups/{archive.pk}/restore", {"ctid": "4310", "force": "1"}, **fetch)
    assert refused.status_code == 409 and "is running" in refused.json()["error"]["message"]


def test_clock_jumps_neither_miss_nor_double_a_run(node, make_user):
    from tasks.backup_jobs import claim_run

    Container.objects.create(ctid=4320, node=node, status="running")
    schedule = BackupSchedule.objects.create(schedule="02:00", selection="include", ctids=[4320])
    due = timezone.now().replace(microsecond=0) - timedelta(days=3)
    BackupSchedule.objects.filter(pk=schedule.pk).update(next_due=due)

    jumped = due + timedelta(days=3, hours=5)  # the clock jumped forward over three 02:00s
    jobs = claim_run(schedule.pk, now=jumped)
    assert [(j.kind, j.target, j.params["slot"]) for j in jobs] == [("vzdumpjob", str(schedule.pk), due.isoformat())]
    schedule.refresh_from_db()
    assert schedule.last_slot == due and schedule.next_due > jumped  # one late run, not three
    assert claim_run(schedule.pk, now=jumped) is None  # a second beat's check claims nothing
    assert claim_run(schedule.pk, now=due - timedelta(hours=1)) is None  # the clock jumped back: nothing again
    assert claim_run(schedule.pk, now=schedule.next_due - timedelta(seconds=1)) is None
    Job.objects.update(status="ok")
    later = claim_run(schedule.pk, now=schedule.next_due)
    assert len(later) == 1 and Job.objects.filter(kind="vzdumpjob").count() == 2
