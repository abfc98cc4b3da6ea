"""Restore tests through the API on a real agent: the newest archive of each of the policy's containers is
restored as a throwaway, booted and checked; a good one passes and is shown proven, a corrupted one and one
that cannot boot fail with the reason, the webhook is told, and no throwaway is left."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.test import Client
from rest_framework.test import APIClient

from engine.backup.dump import backup
from tests.webui.conftest import PASSWORD, start_agent, stop_agent, wait_job
from tests.webui.test_protection_policy import webhook  # noqa: F401 - fixture
from webui.models import BackupArchive, Container, Job, Node, RestoreTest

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def archives_of(engine):
    """``archives_of(ctid)``: the node's dump directory, whose archives of ``ctid`` are removed after the test
    (the session's engine outlives it, and a later test may be given the same ID)."""
    dump = engine.layout.root / "dump"
    dump.mkdir(exist_ok=True)
    ctids: list[int] = []

    def register(ctid: int) -> Path:
        ctids.append(ctid)
        return dump

    yield register
    for ctid in ctids:
        for leftover in dump.glob(f"*vzdump-lxc-{ctid}-*"):
            leftover.unlink(missing_ok=True)


def unbootable(root: Path) -> None:
    init = root / "sbin" / "init"
    init.unlink()
    init.write_text("#!/bin/sh\nexit 1\n")
    init.chmod(0o755)


def test_restore_tests_prove_good_archives_and_name_what_is_wrong_with_bad_ones(
    services_env,
    tmp_path,
    webhook,  # noqa: F811 - the fixture imported above
    make_user,
    stored_busybox,
    ctid_factory,
    engine,
    archives_of,
):
    hooks, url = webhook
    name = f"rt-{os.getpid()}"
    process = start_agent(services_env, name, tmp_path / "agent.log")
    try:
        node = Node.objects.get(name=name)
        good, broken, corrupt = ctid_factory(), ctid_factory(), ctid_factory()
        for ctid in (good, broken, corrupt):
            dump = archives_of(ctid)
            engine.create(ctid, stored_busybox, {"hostname": f"rt-{ctid}"})
            if ctid == broken:
                unbootable(engine._rootfs(engine.config(ctid)))
            archive = Path(backup(engine, ctid, dumpdir=dump, mode="stop").archive)
            if ctid == corrupt:
                data = bytearray(archive.read_bytes())
                data[len(data) // 2 : len(data) // 2 + 4096] = os.urandom(4096)
                archive.write_bytes(bytes(data))
            Container.objects.update_or_create(ctid=ctid, defaults={"node": node, "status": "stopped"})
        before = set(engine.ids())

        api = APIClient()
        api.force_authenticate(make_user("rt-admin", superuser=True))
        assert (
            api.post("/api/notification-targets/", {"name": "hook", "kind": "webhook", "url": url}).status_code == 201
        )
        response = api.post(
            "/api/protection-policies/",
            {
                "name": "proof",
                "selection": "include",
                "ctids": [good, broken, corrupt],
                "restore_test_command": "test -s /etc/hostname",
                "targets": ["hook"],
                "notify_when": "failure",
            },
            format="json",
        )
        assert response.status_code == 201, response.content
        policy = response.json()["id"]
        response = api.post(f"/api/protection-policies/{policy}/restore-test/")
        assert response.status_code == 202, response.content
        job = wait_job(Job.objects.get(pk=response.json()["job"]["id"]), timeout=180)
        lines = list(job.lines.values_list("text", flat=True))
        assert job.kind == "restoretest" and job.status == "error", lines
        assert job.message.startswith("1 of 3 archives restorable; failed:"), job.message

        tests = {t.ctid: t for t in RestoreTest.objects.all()}
        assert tests[good].passed and tests[good].reason == "" and "PASSED" in tests[good].log
        assert set(tests[good].timings) == {"restore", "start", "boot", "health"}
        assert (
            not tests[broken].passed and tests[broken].reason == "boot: init exited during boot (the container stopped)"
        )
        assert not tests[corrupt].passed and tests[corrupt].reason.startswith("restore: ")
        assert "corrupt or truncated archive" in tests[corrupt].reason
        assert set(engine.ids()) == before  # every throwaway destroyed

        shown = {a["name"]: a for a in api.get("/api/backups/").json()["results"]}
        assert shown[tests[good].archive]["last_proven"] is not None
        assert shown[tests[broken].archive]["last_proven"] is None
        client = Client()
        assert client.login(username="rt-admin", password=PASSWORD)
        tab = client.get(f"/ct/{good}/backups/fragment").content.decode()
        assert "proven restorable" in tab and tests[good].archive in tab
        assert "proven restorable" not in client.get(f"/ct/{broken}/backups/fragment").content.decode()
        failed = api.get("/api/restore-tests/", {"passed": "0"}).json()["results"]
        assert sorted(r["ctid"] for r in failed) == sorted([broken, corrupt])

        ((_, _, payload),) = hooks
        assert payload["event"] == "restore-test" and payload["severity"] == "error"
        assert {r["ctid"]: r["status"] for r in payload["results"]} == {good: "ok", broken: "error", corrupt: "error"}
    finally:
        stop_agent(process)


def test_a_policy_with_restore_tests_proves_each_new_backup(
    services_env,
    tmp_path,
    webhook,  # noqa: F811 - the fixture imported above
    make_user,
    stored_busybox,
    ctid_factory,
    engine,
    archives_of,
):
    name = f"rtb-{os.getpid()}"
    process = start_agent(services_env, name, tmp_path / "agent.log")
    try:
        node = Node.objects.get(name=name)
        ctid = ctid_factory()
        archives_of(ctid)
        engine.create(ctid, stored_busybox, {"hostname": f"rtb-{ctid}"})
        Container.objects.update_or_create(ctid=ctid, defaults={"node": node, "status": "stopped"})
        hooks, url = webhook
        api = APIClient()
        api.force_authenticate(make_user("rtb-admin", superuser=True))
        api.post("/api/notification-targets/", {"name": "hook", "kind": "webhook", "url": url}, format="json")
        response = api.post(
            "/api/protection-policies/",
            {
                "name": "proven",
                "targets": ["hook"],
                "selection": "include",
                "ctids": [ctid],
                "backup": {"schedule": "sun 03:00", "mode": "stop", "nodes": [name]},
                "restore_test": True,
            },
            format="json",
        )
        assert response.status_code == 201, response.content
        schedule = response.json()["backup"]["id"]
        response = api.post(f"/api/backup-schedules/{schedule}/run/")
        assert response.status_code == 202, response.content
        run = wait_job(Job.objects.get(pk=response.json()["job"]["id"]), timeout=120)
        lines = list(run.lines.values_list("text", flat=True))
        assert run.status == "ok" and any("restore test queued" in line for line in lines), lines
        proof = wait_job(Job.objects.get(kind="restoretest"), timeout=120)
        assert proof.status == "ok" and proof.message == "1 of 1 archives restorable", proof.message
        (test,) = RestoreTest.objects.all()
        archive = BackupArchive.objects.filter(ctid=ctid).order_by("-time").first()  # the new one
        assert test.passed and test.archive == archive.name and test.job_id == proof.pk
        # The policy's webhook heard of the backup run and of the restore test (notify_when: always).
        assert [(p["event"], p["severity"]) for _, _, p in hooks] == [("backup", "info"), ("restore-test", "info")]
        assert hooks[0][2]["results"][0]["archive"] == archive.name
    finally:
        stop_agent(process)
