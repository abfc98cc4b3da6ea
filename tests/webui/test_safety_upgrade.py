"""The container page's "Update packages" on the real agent: a safety snapshot, then the ostype's upgrade command
inside the running container; a failed upgrade fails the task, naming its exit code, and one click on the task
page rolls it back.  The container is busybox with ostype alpine and a stand-in ``apk`` (no network here): the
container, the exec, the snapshot and the rollback are real."""

from __future__ import annotations

import re

import pytest
from django.core.exceptions import PermissionDenied
from django.test import Client

from tests.webui.conftest import PASSWORD, wait_job
from webui.access import Access
from webui.actions import machine as actions
from webui.models import AccessEntry, Container, Job, Role
from webui.models.queue import JobRefused

pytestmark = pytest.mark.django_db(transaction=True)

APK = """#!/bin/sh
echo "$*" >> /root/apk.log
if [ -e /root/apk-fails ] && [ "$1" = upgrade ]; then echo "ERROR: unable to upgrade" >&2; exit 3; fi
echo "OK: $1 done"
"""


@pytest.fixture
def mirror(node, engine, monkeypatch):
    import tasks.mirror
    from tasks.mirror import sync_container

    monkeypatch.setattr(tasks.mirror, "node_engine", lambda: engine)
    return lambda ctid: sync_container(node, ctid)


def test_update_packages_snapshots_first_and_a_failed_upgrade_rolls_back_in_one_click(
    agent, mirror, make_user, engine, busybox_template, ctid_factory
):
    ctid, plain = ctid_factory(), ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "upg"})
    engine.set(ctid, {"ostype": "alpine"})
    root = engine._rootfs(engine.config(ctid))
    (root / "sbin" / "apk").write_text(APK)
    (root / "sbin" / "apk").chmod(0o755)
    engine.start(ctid)
    engine.create(plain, busybox_template, {"hostname": "upg-plain"})
    engine.start(plain)
    user = make_user("upg-admin", superuser=True)
    admin = Access(user)
    ct = mirror(ctid)
    mirror(plain)

    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    page = client.get(f"/ct/{ctid}/").content.decode()
    assert 'id="btn-upgrade"' in page and "Update packages" in page
    assert 'id="btn-upgrade"' not in client.get(f"/ct/{plain}/").content.decode()  # busybox: unmanaged

    job = wait_job(actions.upgrade(admin, ct))
    lines = list(job.lines.values_list("text", flat=True))
    assert job.status == "ok" and job.message == "packages updated", lines
    assert job.summary()["safety_snapshot"] == "pre-upgrade-0"
    assert "OK: upgrade done" in lines
    log = engine._rootfs(engine.config(ctid)) / "root" / "apk.log"
    assert log.read_text() == "update\nupgrade --available\n"

    (engine._rootfs(engine.config(ctid)) / "root" / "apk-fails").write_text("")
    ct = mirror(ctid)
    failed = wait_job(actions.upgrade(admin, ct))
    lines = list(failed.lines.values_list("text", flat=True))
    assert failed.status == "error" and "the package upgrade exited 3" in failed.message, lines
    assert "ERROR: unable to upgrade" in lines and failed.summary()["safety_snapshot"] == "pre-upgrade-1"
    assert log.read_text().count("upgrade --available") == 2

    page = client.get(f"/jobs/{failed.pk}/").content.decode()
    action = re.search(r'<form method="post" action="([^"]+)" class="inline safety-rollback"', page).group(1)
    response = client.post(action, {"name": "pre-upgrade-1"}, HTTP_X_REQUESTED_WITH="fetch")
    assert response.status_code == 202, response.content
    back = wait_job(Job.objects.get(pk=response.json()["job"]["id"]))
    assert back.status == "ok", list(back.lines.values_list("text", flat=True))
    root = engine._rootfs(engine.config(ctid)) / "root"
    # As it was just before the failed upgrade: its log lines gone (the marker that made it fail was there before).
    assert (root / "apk.log").read_text() == "update\nupgrade --available\n" and (root / "apk-fails").exists()
    assert engine.status(ctid).status == "running"

    # Refusals, each naming what is wrong.
    with pytest.raises(JobRefused, match="ostype 'unmanaged': no package manager"):
        actions.upgrade(admin, mirror(plain))
    editor = make_user("upg-editor")
    role = Role.objects.create(name="ConfigNoSnap", privileges=["VM.Audit", "VM.Config"])
    AccessEntry.objects.create(user=editor, role=role, path=ct.path, propagate=True)
    with pytest.raises(PermissionDenied, match="VM.Snapshot"):
        actions.upgrade(Access(editor), Container.objects.get(ctid=ctid))
    engine.stop(ctid)
    with pytest.raises(JobRefused, match="not running"):
        actions.upgrade(admin, mirror(ctid))
