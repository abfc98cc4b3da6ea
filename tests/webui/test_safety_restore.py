"""A restore over an existing container, through the real node agent, is preceded by a safety snapshot that the
restore keeps (with the old volumes it stands on): one click on the task page brings the container back as it
was before the restore, the restored volume then kept as unused."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from rest_framework.test import APIClient

from tests.webui.conftest import PASSWORD, wait_job
from tests.webui.test_backups_jobs import answer_job
from webui.models import BackupArchive, Container, Job

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_restore_over_a_container_can_be_rolled_back_in_one_click(
    agent, node, stored_busybox, ctid_factory, engine, make_user, monkeypatch
):
    import tasks.safety
    from tasks.safety import sweep

    monkeypatch.setattr(tasks.safety, "node_engine", lambda: engine)
    user = make_user("sr-admin", superuser=True)
    api = APIClient()
    api.force_authenticate(user)
    ctid = ctid_factory()
    engine.create(ctid, stored_busybox, {"hostname": "sr-ct"})
    Container.objects.update_or_create(ctid=ctid, defaults={"node": node, "status": "stopped", "hostname": "sr-ct"})

    def marker():
        return engine._rootfs(engine.config(ctid)) / "root" / "marker"

    marker().write_text("as archived")
    job = answer_job(api.post(f"/api/containers/{ctid}/backups/", {"mode": "stop"}, format="json"))
    assert job.status == "ok", "\n".join(job.lines.values_list("text", flat=True))
    archive = BackupArchive.objects.get(ctid=ctid, node=node)
    try:
        marker().write_text("the work of the day")
        old_root = engine.config(ctid).current.values["rootfs"].split(",")[0]

        job = answer_job(api.post(f"/api/backups/{archive.pk}/restore/", {"ctid": ctid, "force": True}, format="json"))
        lines = "\n".join(job.lines.values_list("text", flat=True))
        assert job.status == "ok" and job.summary()["safety_snapshot"] == "pre-restore-0", lines
        assert marker().read_text() == "as archived"
        config = engine.config(ctid)
        new_root = config.current.values["rootfs"].split(",")[0]
        assert new_root != old_root and config.current.values["unused0"] == old_root
        assert config.snapshots["pre-restore-0"].values["rootfs"].split(",")[0] == old_root
        assert "caisson-policy=0 expires=" in config.snapshots["pre-restore-0"].description

        # One click on the task's page: the container is back as it was before the restore.
        client = Client()
        assert client.login(username=user.username, password=PASSWORD)
        page = client.get(f"/jobs/{job.pk}/").content.decode()
        action = re.search(r'<form method="post" action="([^"]+)" class="inline safety-rollback"', page).group(1)
        response = client.post(action, {"name": "pre-restore-0"}, HTTP_X_REQUESTED_WITH="fetch")
        assert response.status_code == 202, response.content
        back = wait_job(Job.objects.get(pk=response.json()["job"]["id"]))
        assert back.status == "ok", "\n".join(back.lines.values_list("text", flat=True))
        assert marker().read_text() == "the work of the day"
        config = engine.config(ctid)
        assert config.current.values["rootfs"].split(",")[0] == old_root
        unused = sorted(v for k, v in config.current.values.items() if k.startswith("unused"))
        assert unused == [new_root]  # the restored volume, kept; the old one is in use again, listed once

        # Once the safety snapshots expire, the sweep deletes them and destroys the volume only they held (the
        # restored root, kept by the rollback's own safety snapshot); the root in use stays.
        path = engine.layout.config_path(ctid)
        path.write_text(re.sub(r"expires=\S+", "expires=2000-01-01T00:00:00Z", path.read_text()))
        _, driver, vol = engine.storages.resolve(new_root, ctid)
        assert driver.path(vol).exists()
        assert sorted(sweep(force=True)) == [(ctid, "pre-restore-0"), (ctid, "pre-rollback-0")]
        config = engine.config(ctid)
        assert not [k for k in config.current.values if k.startswith("unused")] and not config.snapshots
        assert not driver.path(vol).exists() and marker().read_text() == "the work of the day"
    finally:
        (engine.layout.root / "dump" / archive.name).unlink(missing_ok=True)
