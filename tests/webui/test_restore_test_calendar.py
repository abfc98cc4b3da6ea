"""Restore tests on a calendar of their own, fired by real Celery beat and run by a node agent: the throwaway
sits on an isolated bridge and its TCP port is checked from the host over it; the policy's webhook, given a
secret Authorization header, receives it while no page, API answer, audit entry or job log shows it."""

from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from engine.backup.dump import backup
from tests.webui.conftest import PASSWORD, start_agent, stop_agent
from tests.webui.test_protection_policy import fire, webhook  # noqa: F401 - fixture
from tests.webui.test_restore_tests import archives_of  # noqa: F401 - fixture
from webui.models import AuditEntry, Container, Job, Node, NotificationTarget, ProtectionPolicy, RestoreTest

pytestmark = pytest.mark.django_db(transaction=True)
SECRET = "Bearer rt-" + os.urandom(8).hex()


def test_beat_runs_restore_tests_on_their_calendar_on_an_isolated_bridge_and_the_webhook_gets_its_secret(
    services_env,
    tmp_path,
    beat,
    webhook,  # noqa: F811 - the fixture imported above
    make_user,
    stored_busybox,
    ctid_factory,
    engine,
    archives_of,  # noqa: F811 - the fixture imported above
    settings,
):
    hooks, url = webhook
    name = f"rtc-{os.getpid()}"
    process = start_agent(services_env, name, tmp_path / "agent.log")
    try:
        node = Node.objects.get(name=name)
        ctid = ctid_factory()
        dump = archives_of(ctid)
        engine.create(ctid, stored_busybox, {"hostname": f"rtc-{ctid}"})
        backup(engine, ctid, dumpdir=dump, mode="stop")
        Container.objects.update_or_create(ctid=ctid, defaults={"node": node, "status": "stopped"})
        before = set(engine.ids())

        settings.CAISSON_BACKUP_CHECK_INTERVAL = 1
        admin = make_user("rtc-admin", superuser=True)
        api = APIClient()
        api.force_authenticate(admin)
        target = {"name": "hook", "kind": "webhook", "url": url, "headers": {"Authorization": SECRET}}
        response = api.post("/api/notification-targets/", target, format="json")
        assert response.status_code == 201, response.content
        assert response.json()["header_names"] == ["Authorization"] and SECRET not in response.content.decode()
        # A change that names no header keeps it; a bad header name is refused, naming it.
        hook = response.json()["id"]
        response = api.patch(f"/api/notification-targets/{hook}/", {"comment": "ops"}, format="json")
        assert response.status_code == 200 and response.json()["header_names"] == ["Authorization"]
        response = api.patch(f"/api/notification-targets/{hook}/", {"headers": {"Bad Name": "x"}}, format="json")
        assert response.status_code == 400 and "'Bad Name' is not an HTTP header name" in response.content.decode()
        stored = NotificationTarget.objects.get(pk=hook)
        assert SECRET not in stored.headers_sealed and stored.secret_headers() == {"Authorization": SECRET}

        response = api.post(
            "/api/protection-policies/",
            {
                "name": "weekly-proof",
                "selection": "include",
                "ctids": [ctid],
                "restore_test_schedule": "sat 03:00",
                "restore_test_network": "isolated",
                "restore_test_command": "/bin/sh -c 'nc -l -p 2222 </dev/null >/dev/null 2>&1 & sleep 0.3'",
                "restore_test_port": 2222,
                "targets": ["hook"],
            },
            format="json",
        )
        assert response.status_code == 201, response.content
        body = response.json()
        assert [r["kind"] for r in body["next_runs"]] == ["restore-test"] * 5
        first = datetime.fromisoformat(body["next_runs"][0]["time"])
        assert first == datetime.fromisoformat(body["restore_test_next_due"])
        policy = ProtectionPolicy.objects.get(pk=body["id"])
        assert policy.next_due is None and policy.periodic_task.enabled  # beat checks it for the restore tests
        response = api.post("/api/protection-policies/", {"name": "bad", "restore_test_schedule": "fooday"})
        assert response.status_code == 400 and "restore_test_schedule" in response.json()["error"]["fields"]

        run = fire(beat, policy, "restore_test_next_due", "restoretest", tmp_path / "agent.log")
        due = run.due
        lines = list(run.lines.values_list("text", flat=True))
        assert run.status == "ok" and run.message == "1 of 1 archives restorable", lines
        (test,) = RestoreTest.objects.all()
        assert test.passed and test.policy_id == policy.pk, test.log
        assert "TCP port 2222: answers at 169.254." in test.log and " over rtb" in test.log
        assert not Job.objects.filter(kind="snapshotjob").exists()  # no snapshot schedule: no snapshot run
        policy.refresh_from_db()
        assert policy.restore_test_last_slot == due and policy.restore_test_next_due > timezone.now()
        assert set(engine.ids()) == before
        (bridge,) = re.findall(r"bridge (rtb\d+) removed", test.log)
        assert not Path("/sys/class/net", bridge).exists()

        deadline = time.monotonic() + 20
        while not hooks:
            assert time.monotonic() < deadline, lines
            time.sleep(0.1)
        ((_, headers, payload),) = hooks
        assert headers["Authorization"] == SECRET and payload["event"] == "restore-test"

        # The secret is shown back nowhere: not on the page, not in the audit log, not in the run's log.
        client = Client()
        assert client.login(username="rtc-admin", password=PASSWORD)
        page = client.get("/datacenter/protection/").content.decode()
        assert "headers set: Authorization (values hidden)" in page and SECRET not in page
        audits = json.dumps(list(AuditEntry.objects.values_list("detail", flat=True)))
        assert "Authorization" in audits and SECRET not in audits
        assert SECRET not in "\n".join(lines) and SECRET not in (tmp_path / "agent.log").read_text()
    finally:
        stop_agent(process)
