"""A protection policy made through the API, its snapshots fired by real Celery beat, run by a node agent.

The run takes a snapshot of each running container carrying the policy's
tag, deletes the policy's expired snapshots and those its keep-* rules do not
keep, leaves other snapshots and other containers alone, and tells a mail
target (an SMTP server on loopback) and a webhook (an HTTP server on
loopback, started here).
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from engine.autosnap import marker
from tests.webui.conftest import start_agent, stop_agent, wait_job
from tests.webui.test_backups_schedule import smtp  # noqa: F401 - fixture
from webui.models import Container, Job, Node, ProtectionPolicy

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def webhook():
    """An HTTP server on loopback that records each POST's path, headers and JSON body."""
    received: list[tuple[str, dict, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's hook name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append((self.path, dict(self.headers), json.loads(body)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield received, f"http://127.0.0.1:{server.server_address[1]}/hook/caisson"
    server.shutdown()
    server.server_close()


def fire(beat, policy: ProtectionPolicy, due_field: str, kind: str, agent_log) -> Job:
    """Set the policy's ``due_field`` two seconds ahead (the test's clock), start two beats (one run must be
    claimed), and return the ``kind`` job they queue once it ends."""
    due = timezone.now() + timedelta(seconds=2)
    ProtectionPolicy.objects.filter(pk=policy.pk).update(**{due_field: due})
    beat()
    beat()
    deadline = time.monotonic() + 60
    while not Job.objects.filter(kind=kind).exists():
        assert time.monotonic() < deadline, agent_log.read_text()[-3000:]
        time.sleep(0.1)
    job = wait_job(Job.objects.get(kind=kind), timeout=180)
    job.due = due
    return job


def names(engine, ctid) -> list[str]:
    return [s.name for s in engine.list_snapshots(ctid) if s.name != "current"]


def test_beat_fires_a_policys_snapshots_that_expire_prune_and_notify(
    services_env,
    tmp_path,
    beat,
    smtp,  # noqa: F811 - the fixture imported above
    webhook,
    make_user,
    stored_busybox,
    ctid_factory,
    engine,
    settings,  # noqa: F811
):
    inbox, port = smtp
    hooks, url = webhook
    name = f"pp-{os.getpid()}"
    process = start_agent(
        services_env,
        name,
        tmp_path / "agent.log",
        CAISSON_EMAIL_HOST="127.0.0.1",
        CAISSON_EMAIL_PORT=str(port),
        CAISSON_EMAIL_FROM="policy@caisson.test",
        # The node's own sweep of expired snapshots stays out of the way: here the run expires them.
        CAISSON_SNAPSHOT_SWEEP_INTERVAL="3600",
    )
    try:
        node = Node.objects.get(name=name)
        tagged, stopped, other = ctid_factory(), ctid_factory(), ctid_factory()
        for ctid, tags, run in ((tagged, "prod;web", True), (stopped, "prod", False), (other, "", True)):
            engine.create(ctid, stored_busybox, {"hostname": f"pp-{ctid}", **({"tags": tags} if tags else {})})
            if run:
                engine.start(ctid)
            Container.objects.update_or_create(
                ctid=ctid,
                defaults={
                    "node": node,
                    "status": "running" if run else "stopped",
                    "config": {"tags": tags} if tags else {},
                },
            )

        settings.CAISSON_BACKUP_CHECK_INTERVAL = 1
        api = APIClient()
        api.force_authenticate(make_user("pp-admin", superuser=True))
        for target in (
            {"name": "ops-mail", "kind": "mail", "mail_to": "ops@example.org"},
            {"name": "ops-hook", "kind": "webhook", "url": url},
        ):
            response = api.post("/api/notification-targets/", target, format="json")
            assert response.status_code == 201, response.content
        response = api.post(
            "/api/protection-policies/",
            {
                "name": "prod",
                "selection": "tag",
                "tag": "prod",
                "snapshot_schedule": "*:0/15",
                "snapshot_pattern": "auto%d",
                "snapshot_expiry": "2d",
                "snap_keep_last": 2,
                "targets": ["ops-mail", "ops-hook"],
                "notify_when": "always",
            },
            format="json",
        )
        assert response.status_code == 201, response.content
        body = response.json()
        policy = ProtectionPolicy.objects.get(pk=body["id"])
        assert policy.periodic_task.task == "caisson.protection.check" and policy.periodic_task.enabled
        assert [r["kind"] for r in body["next_runs"]] == ["snapshot"] * 5

        # What the policy took before: one expired, two still valid; and one snapshot taken by hand.
        now = timezone.now()
        engine.snapshot(tagged, "manual", "by hand")
        engine.snapshot(tagged, "auto0", marker(policy.pk, now - timedelta(minutes=1)))
        engine.snapshot(tagged, "auto1", marker(policy.pk, now + timedelta(days=1)))
        engine.snapshot(tagged, "auto2", marker(policy.pk, None))
        engine.snapshot(other, "auto0", marker(policy.pk + 1000, now - timedelta(days=1)))  # not this policy's

        run = fire(beat, policy, "next_due", "snapshotjob", tmp_path / "agent.log")
        due = run.due
        lines = list(run.lines.values_list("text", flat=True))
        assert run.status == "ok" and run.message == "1 snapshots taken", lines

        # auto3 taken; auto0 expired; keep-last=2 keeps auto3 and auto2 of the rest; the manual one stays.
        assert sorted(names(engine, tagged)) == ["auto2", "auto3", "manual"], lines
        new = next(s for s in engine.list_snapshots(tagged) if s.name == "auto3")
        assert f"caisson-policy={policy.pk} expires=" in new.description
        assert any("'auto0' deleted (expired at" in line for line in lines), lines
        assert any("'auto1' deleted (retention" in line for line in lines), lines
        assert names(engine, stopped) == [] and names(engine, other) == ["auto0"]
        mirrored = Container.objects.get(ctid=tagged).snapshots
        assert sorted(s["name"] for s in mirrored if s["name"] != "current") == ["auto2", "auto3", "manual"]
        policy.refresh_from_db()
        assert policy.last_slot == due and policy.next_due > timezone.now()

        deadline = time.monotonic() + 20
        while not (inbox.messages and hooks):
            assert time.monotonic() < deadline, lines
            time.sleep(0.1)
        ((recipients, mail),) = inbox.messages
        assert recipients == ["ops@example.org"] and mail["Subject"] == f"snapshot policy prod on {name}: successful"
        assert f"CT {tagged}: OK: snapshot 'auto3', deleted auto0, auto1" in mail.get_payload(decode=True).decode()
        ((path, headers, payload),) = hooks
        assert path == "/hook/caisson" and headers["Content-Type"] == "application/json"
        assert payload["policy"] == "prod" and payload["event"] == "snapshot" and payload["severity"] == "info"
        rows = {r["ctid"]: r for r in payload["results"]}
        assert rows[tagged]["snapshot"] == "auto3" and rows[stopped]["status"] == "skipped"
        assert other not in rows
        assert Job.objects.filter(kind="snapshotjob").count() == 1
        assert engine.status(tagged).status == "running"
    finally:
        stop_agent(process)
