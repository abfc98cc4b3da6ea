"""Celery beat killed (SIGKILL) at a backup job's due time and started again: the run happens once.

Beat only sends the check; the check claims a run in the database (``last_slot``, ``next_due``) in one
transaction, so a check sent before the kill, one sent again by the new beat, or both, claim one run.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from tests.webui.conftest import wait_job
from webui.models import BackupSchedule, Container, Job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _sends(log) -> int:
    return log.read_bytes().count(b"caisson.backup.check")


def test_beat_killed_at_a_due_time_runs_the_backup_once(
    agent, node, beat, tmp_path, make_user, stored_busybox, ctid_factory, engine, settings
):
    ctid = ctid_factory()
    engine.create(ctid, stored_busybox, {"hostname": "bk-once"})
    Container.objects.update_or_create(ctid=ctid, defaults={"node": node, "status": "stopped", "hostname": "bk-once"})
    settings.CAISSON_BACKUP_CHECK_INTERVAL = 1
    api = APIClient()
    api.force_authenticate(make_user("bk-once", superuser=True))
    response = api.post(
        "/api/backup-schedules/",
        {"schedule": "mon..fri 02:30", "selection": "include", "ctids": [ctid], "nodes": [node.name], "mode": "stop"},
        format="json",
    )
    assert response.status_code == 201, response.content
    schedule = BackupSchedule.objects.get(pk=response.json()["id"])
    due = timezone.now() + timedelta(seconds=2)
    BackupSchedule.objects.filter(pk=schedule.pk).update(next_due=due)
    first = beat()
    deadline = time.monotonic() + 60
    while not BackupSchedule.objects.filter(pk=schedule.pk, last_slot=due).exists():  # the run is claimed
        assert time.monotonic() < deadline, "the run was never claimed"
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)  # at the due time, its check just sent
    first.wait()
    beat()
    log = tmp_path / "beat1.log"
    while _sends(log) < 3:  # the new beat has sent the check again, several times
        assert time.monotonic() < deadline + 60, log.read_text()[-2000:]
        time.sleep(0.1)
    run = wait_job(Job.objects.get(kind="vzdumpjob"))
    assert run.status == "ok", "\n".join(run.lines.values_list("text", flat=True))
    while Job.objects.filter(kind="vzdump", target=str(ctid), status__in=Job.ACTIVE).exists():
        time.sleep(0.1)
    assert Job.objects.filter(kind="vzdumpjob").count() == 1
    assert Job.objects.filter(kind="vzdump", target=str(ctid)).count() == 1
    schedule.delete()
