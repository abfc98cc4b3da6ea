"""A backup job made through the API, fired by real Celery beat (two of them), run by a node agent, mailed.

The agent here is one of its own (another node name and queue) so that it
has the mail settings of a real SMTP server listening on loopback.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from email import message_from_bytes

import pytest
from aiosmtpd.controller import Controller
from django.utils import timezone
from rest_framework.test import APIClient

from tests.webui.conftest import free_port, start_agent, stop_agent, wait_job
from webui.models import BackupArchive, BackupSchedule, Container, Job, Node

pytestmark = pytest.mark.django_db(transaction=True)


class Inbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def smtp():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield inbox, controller.port
    controller.stop()


def fake_archive(dump, ctid: int, stamp: str, protected: bool = False) -> str:
    name = f"vzdump-lxc-{ctid}-{stamp}.tar.zst"
    (dump / name).write_bytes(b"not really an archive")
    if protected:
        (dump / f"{name}.protected").touch()
    return name


def test_beat_fires_a_backup_job_that_backs_up_prunes_after_success_and_mails(
    services_env, tmp_path, beat, smtp, make_user, stored_busybox, ctid_factory, engine, settings
):
    inbox, port = smtp
    name = f"bk-mail-{os.getpid()}"
    process = start_agent(
        services_env,
        name,
        tmp_path / "agent.log",
        CAISSON_EMAIL_HOST="127.0.0.1",
        CAISSON_EMAIL_PORT=str(port),
        CAISSON_EMAIL_FROM="backup@caisson.test",
    )
    try:
        node = Node.objects.get(name=name)
        good, ghost = ctid_factory(), ctid_factory()
        engine.create(good, stored_busybox, {"hostname": "bk-good"})
        engine.start(good)
        Container.objects.update_or_create(
            ctid=good, defaults={"node": node, "status": "running", "hostname": "bk-good"}
        )
        # In the mirror on this node, but gone from it: its backup fails.
        Container.objects.update_or_create(ctid=ghost, defaults={"node": node, "status": "stopped"})
        dump = engine.layout.root / "dump"
        dump.mkdir(exist_ok=True)
        old = [fake_archive(dump, good, f"2020_01_0{day}-02_00_00") for day in (1, 2)]
        kept = fake_archive(dump, good, "2019_06_01-02_00_00", protected=True)
        ghosts = [fake_archive(dump, ghost, f"2020_01_0{day}-02_00_00") for day in (1, 2)]
        leftover = dump / f".vzdump-lxc-{good}-2020_01_01-00_00_00.tar.zst.x1.part"
        leftover.write_bytes(b"left by a killed backup")

        settings.CAISSON_BACKUP_CHECK_INTERVAL = 1
        api = APIClient()
        api.force_authenticate(make_user("bk-sched", superuser=True))
        response = api.post(
            "/api/backup-schedules/",
            {
                "schedule": "mon..fri 02:30",
                "selection": "include",
                "ctids": [good, ghost],
                "nodes": [name],
                "mode": "suspend",
                "keep_last": 1,
                "mail_to": "ops@example.org",
                "mail_when": "failure",
            },
            format="json",
        )
        assert response.status_code == 201, response.content
        schedule = BackupSchedule.objects.get(pk=response.json()["id"])
        assert schedule.periodic_task.queue == node.queue
        due = timezone.now() + timedelta(seconds=2)  # the test's clock: the next run is now two seconds away
        BackupSchedule.objects.filter(pk=schedule.pk).update(next_due=due)
        beat()
        beat()  # a second beat by mistake: both send the check, one run is claimed

        deadline = time.monotonic() + 60
        while not Job.objects.filter(kind="vzdumpjob").exists():
            assert time.monotonic() < deadline, (tmp_path / "agent.log").read_text()[-3000:]
            time.sleep(0.1)
        run = wait_job(Job.objects.get(kind="vzdumpjob"))
        lines = list(run.lines.values_list("text", flat=True))
        assert run.status == "error" and f"1 of 2 backups failed: {ghost}" in run.message, lines
        deadline = time.monotonic() + 20
        while not inbox.messages:
            assert time.monotonic() < deadline, lines
            time.sleep(0.1)

        schedule.refresh_from_db()
        assert schedule.last_slot == due and schedule.next_due > timezone.now() + timedelta(minutes=1)
        child = Job.objects.get(kind="vzdump", target=str(good))
        assert child.status == "ok" and child.params["parent"] == run.pk
        new = child.params["result"]["archive"]
        assert sorted(child.params["result"]["pruned"]) == sorted(old)
        on_disk = sorted(p.name for p in dump.iterdir() if p.name.startswith("vzdump-") and p.name.endswith(".zst"))
        # keep-last=1 kept the new backup, the protected one is exempt, the failed container lost nothing.
        assert on_disk == sorted([new, kept, *ghosts])
        assert not leftover.exists()
        mirrored = set(BackupArchive.objects.filter(node=node).values_list("name", flat=True))
        assert mirrored == {new, kept, *ghosts}, list(BackupArchive.objects.values_list("node__name", "name"))

        ((recipients, mail),) = inbox.messages
        assert recipients == ["ops@example.org"] and mail["From"] == "backup@caisson.test"
        assert mail["Subject"] == f"vzdump backup status ({name}): backup failed (1 of 2)"
        body = mail.get_payload(decode=True).decode()
        assert new in body and all(o in body for o in old), body
        assert f"CT {ghost}: CT {ghost} does not exist" in body
        assert Job.objects.filter(kind="vzdumpjob").count() == 1  # two beats, one run
        assert engine.status(good).status == "running"
    finally:
        stop_agent(process)
