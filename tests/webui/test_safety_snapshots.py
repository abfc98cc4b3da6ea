"""Safety snapshots before risky changes, on the real agent: a rollback and a config change marked risky each
leave an expiring snapshot that the task page rolls back to in one click; expired ones are swept."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.test import Client
from django.utils import timezone

from engine.autosnap import marker, owned
from tests.webui.conftest import PASSWORD, wait_job
from webui.access import Access
from webui.actions import containers as actions
from webui.models import AccessEntry, Container, Job, Role

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def mirrored(agent, node, engine, busybox_template, ctid_factory, monkeypatch):
    import tasks.mirror
    import tasks.safety
    from tasks.mirror import sync_container

    monkeypatch.setattr(tasks.mirror, "node_engine", lambda: engine)
    monkeypatch.setattr(tasks.safety, "node_engine", lambda: engine)
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "safe", "memory": "256"})
    return sync_container(node, ctid)


def marker_file(engine, ctid):
    return engine._rootfs(engine.config(ctid)) / "marker"


def test_a_rollback_leaves_a_safety_snapshot_the_task_page_rolls_back_to(mirrored, make_user, engine):
    cache.clear()
    user = make_user("safe-admin", superuser=True)
    admin, ct = Access(user), mirrored
    marker_file(engine, ct.ctid).write_text("before")
    assert wait_job(actions.snapshot(admin, ct, "snapshot", "base")).status == "ok"
    marker_file(engine, ct.ctid).write_text("after: the work of the day")
    ct.refresh_from_db()
    job = wait_job(actions.snapshot(admin, ct, "rollback", "base"))
    assert job.status == "ok" and job.summary()["safety_snapshot"] == "pre-rollback-0", job.message
    assert marker_file(engine, ct.ctid).read_text() == "before"
    (safety,) = owned(0, engine.list_snapshots(ct.ctid))
    assert safety.name == "pre-rollback-0"
    assert timedelta(hours=23) < safety.expires - timezone.now() <= timedelta(days=1)

    # One click on the task's page: the form it shows rolls back to the safety snapshot.
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    action = re.search(r'<form method="post" action="([^"]+)" class="inline safety-rollback"', page).group(1)
    assert 'name="name" value="pre-rollback-0"' in page
    response = client.post(action, {"name": "pre-rollback-0"}, HTTP_X_REQUESTED_WITH="fetch")
    assert response.status_code == 202, response.content
    back = wait_job(Job.objects.get(pk=response.json()["job"]["id"]))
    assert back.status == "ok" and marker_file(engine, ct.ctid).read_text() == "after: the work of the day"
    assert back.summary()["safety_snapshot"] == "pre-rollback-1"  # that rollback could be undone too


def test_a_config_change_marked_risky_is_snapshotted_first_and_expired_ones_are_swept(
    mirrored, make_user, engine, settings
):
    from tasks.safety import sweep

    admin, ct = Access(make_user("safe-admin2", superuser=True)), mirrored
    plain = wait_job(actions.update_config(admin, ct, {"memory": 300}))
    assert plain.status == "ok" and "safety_snapshot" not in plain.summary()
    settings.CAISSON_SAFETY_SNAPSHOT_EXPIRY = "2H"
    risky = wait_job(actions.update_config(admin, ct, {"memory": 512}, risky=True))
    assert risky.status == "ok" and risky.summary()["safety_snapshot"] == "pre-config-0"
    snap = next(s for s in engine.list_snapshots(ct.ctid) if s.name == "pre-config-0")
    assert engine.config(ct.ctid).snapshots["pre-config-0"].values["memory"] == "300"
    assert "caisson-policy=0 expires=" in snap.description and "before config" in snap.description

    engine.snapshot(ct.ctid, "pre-config-7", marker(0, timezone.now() - timedelta(minutes=1)))
    engine.snapshot(ct.ctid, "auto5", marker(12345, timezone.now() - timedelta(minutes=1)))  # a gone policy's
    engine.snapshot(ct.ctid, "auto6", marker(12345, None))
    engine.snapshot(ct.ctid, "kept", "by hand")
    assert sorted(sweep(force=True)) == [(ct.ctid, "auto5"), (ct.ctid, "pre-config-7")]
    assert sorted(s.name for s in engine.list_snapshots(ct.ctid)) == ["auto6", "current", "kept", "pre-config-0"]

    # Marking a change risky takes a snapshot: it needs VM.Snapshot besides VM.Config.
    editor = make_user("safe-editor")
    role = Role.objects.create(name="ConfigOnly", privileges=["VM.Audit", "VM.Config"])
    AccessEntry.objects.create(user=editor, role=role, path=ct.path, propagate=True)
    editor = Access(editor)
    with pytest.raises(PermissionDenied, match="VM.Snapshot"):
        actions.update_config(editor, Container.objects.get(ctid=ct.ctid), {"memory": 256}, risky=True)
    assert not Job.objects.filter(user__username="safe-editor").exists()
