"""The node's own rights checks, through the real agent: what only the node can read (an archive's config,
a clone source's) is checked against what the user who asked may set, before anything is written."""
from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.webui.conftest import wait_job
from webui.models import AccessEntry, BackupArchive, BackupSchedule, Container, Job, Role
from webui.models.queue import submit

pytestmark = pytest.mark.django_db(transaction=True)


def lines(job) -> str:
    return "\n".join(job.lines.values_list("text", flat=True))


def test_a_privileged_archive_restores_and_clones_only_for_a_superuser(agent, node, stored_busybox, ctid_factory,
                                                                       engine, make_user):
    root = APIClient()
    root.force_authenticate(make_user("root", superuser=True))
    tenant_user = make_user("tenant", "ContainerAdmin", "/")  # everything a tenant gets, on every node and storage
    tenant = APIClient()
    tenant.force_authenticate(tenant_user)
    source, target, copy = ctid_factory(), ctid_factory(), ctid_factory()
    engine.create(source, stored_busybox, {"hostname": "priv", "unprivileged": "0"})
    Container.objects.create(ctid=source, node=node, status="stopped", hostname="priv", unprivileged=False,
                             config={"unprivileged": "0"})
    response = root.post(f"/api/containers/{source}/backups/", {"mode": "stop"}, format="json")
    assert response.status_code == 202, response.content
    job = wait_job(Job.objects.get(pk=response.json()["job"]["id"]))
    assert job.status == "ok", lines(job)
    archive = BackupArchive.objects.get(name=job.params["result"]["archive"])  # IDs are reused between tests

    # The web tier cannot read the archive's config: it queues the job, and the node refuses it.
    response = tenant.post(f"/api/backups/{archive.pk}/restore/", {"ctid": target}, format="json")
    assert response.status_code == 202, response.content
    job = wait_job(Job.objects.get(pk=response.json()["job"]["id"]))
    assert job.status == "error" and "unprivileged" in job.message and "superuser" in job.message, lines(job)
    assert not engine.exists(target) and not Container.objects.filter(ctid=target).exists()
    assert not (engine.layout.root / "images" / str(target)).exists()

    # The clone job checks its source's config itself (here queued without the web tier's check).
    job = wait_job(submit("vzclone", node, f"/ct/{source}", str(source), user=tenant_user,
                          params={"newid": copy, "snapshot": None, "full": True, "storage": None, "hostname": None}))
    assert job.status == "error" and "unprivileged" in job.message, lines(job)
    assert not engine.exists(copy)

    # The same archive restores for a superuser: the check is what refused.
    response = root.post(f"/api/backups/{archive.pk}/restore/", {"ctid": target}, format="json")
    job = wait_job(Job.objects.get(pk=response.json()["job"]["id"]), timeout=120)
    assert job.status == "ok", lines(job)
    assert engine.exists(target) and not engine.status(target, stats=False).unprivileged

    # Destroying it takes its grants and its place in backup jobs along (the archives keep their own checks).
    AccessEntry.objects.create(user=tenant_user, role=Role.objects.get(name="Operator"), path=f"/ct/{target}")
    schedule = BackupSchedule.objects.create(schedule="daily", selection="include", ctids=[source, target])
    response = root.delete(f"/api/containers/{target}/")
    job = wait_job(Job.objects.get(pk=response.json()["job"]["id"]))
    assert job.status == "ok", lines(job)
    assert not Container.objects.filter(ctid=target).exists()
    assert not AccessEntry.objects.filter(path=f"/ct/{target}").exists()
    schedule.refresh_from_db()
    assert schedule.ctids == [source]
    (engine.layout.root / "dump" / archive.name).unlink()
