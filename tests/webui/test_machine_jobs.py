"""Suspend/resume, template, move volume and files through the API and the real node agent, each checked
against the user's rights (webui.actions.machine, tasks.machine)."""

from __future__ import annotations

import os

import pytest
from rest_framework.test import APIClient

from tests.webui.conftest import wait_job
from webui.models import ApiToken, Job, StorageMirror

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def mirrored(agent, node, engine, busybox_template, ctid_factory, monkeypatch):
    """A running busybox container on the node, mirrored into the database."""
    import tasks.mirror
    from tasks.mirror import sync_container

    monkeypatch.setattr(tasks.mirror, "node_engine", lambda: engine)
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "machine", "memory": "128"})
    engine.start(ctid)
    return sync_container(node, ctid)


def client_for(make_user, name: str, role: str | None, superuser: bool = False) -> APIClient:
    user = make_user(name, role, "/", superuser=superuser)
    _, value = ApiToken.issue(user, "t")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {value}")
    return client


def follow(client, response) -> Job:
    assert response.status_code == 202, response.content
    return wait_job(Job.objects.get(pk=response.json()["job"]["id"]))


def test_suspend_and_resume_need_power_management(mirrored, make_user, engine):
    ctid = mirrored.ctid
    auditor = client_for(make_user, "m-auditor", "Auditor")
    operator = client_for(make_user, "m-operator", "Operator")
    assert auditor.post(f"/api/containers/{ctid}/status/suspend/").status_code == 403
    job = follow(operator, operator.post(f"/api/containers/{ctid}/status/suspend/"))
    assert job.status == "ok", job.message
    assert engine.status(ctid).paused
    mirrored.refresh_from_db()
    assert mirrored.paused and mirrored.status == "running"
    assert operator.get(f"/api/containers/{ctid}/").json()["paused"] is True
    again = operator.post(f"/api/containers/{ctid}/status/suspend/")
    assert again.status_code == 409 and "already suspended" in again.json()["error"]["message"]
    assert follow(operator, operator.post(f"/api/containers/{ctid}/status/resume/")).status == "ok"
    assert not engine.status(ctid).paused
    mirrored.refresh_from_db()
    assert not mirrored.paused


def test_files_push_and_pull_keep_owner_and_need_vm_config(mirrored, make_user, engine):
    ctid = mirrored.ctid
    operator = client_for(make_user, "f-operator", "Operator")
    admin = client_for(make_user, "f-admin", "ContainerAdmin")
    upload = {"path": "/root/report.txt", "user": "nobody", "group": "nogroup", "perms": "0640"}

    def file():
        from django.core.files.uploadedfile import SimpleUploadedFile

        return SimpleUploadedFile("report.txt", b"numbers\n")

    assert operator.post(f"/api/containers/{ctid}/files/push/", {**upload, "file": file()}).status_code == 403
    job = follow(admin, admin.post(f"/api/containers/{ctid}/files/push/", {**upload, "file": file()}))
    assert job.status == "ok", job.message
    assert "report.txt" not in str(job.params) or "numbers" not in str(job.params)  # the bytes are not a parameter
    host = f"/proc/{engine.node.running(ctid).pid}/root/root/report.txt"
    st = os.stat(host)
    idmap = engine.node.idmap_of(engine.config(ctid))
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (idmap.host_uid(65534), idmap.host_gid(65534), 0o640)

    assert (
        operator.post(f"/api/containers/{ctid}/files/pull/", {"path": "/root/report.txt"}, format="json").status_code
        == 403
    )
    pulled = follow(
        admin, admin.post(f"/api/containers/{ctid}/files/pull/", {"path": "/root/report.txt"}, format="json")
    )
    assert pulled.status == "ok", pulled.message
    answer = admin.get(f"/api/containers/{ctid}/files/pulled/{pulled.pk}/")
    assert answer.status_code == 200 and answer.content == b"numbers\n"
    assert (answer["X-Caisson-Owner"], answer["X-Caisson-Mode"]) == ("nobody:nogroup", "0640")
    other = client_for(make_user, "f-other", "ContainerAdmin")
    assert other.get(f"/api/containers/{ctid}/files/pulled/{pulled.pk}/").status_code == 400  # not their read

    engine.exec_output(ctid, ["/bin/sh", "-c", "ln -s /../../../etc /root/out"])
    refused = follow(
        admin, admin.post(f"/api/containers/{ctid}/files/pull/", {"path": "/root/out/shadow"}, format="json")
    )
    assert refused.status == "error" and "leaves the container's root" in refused.message
    bad = admin.post(f"/api/containers/{ctid}/files/pull/", {"path": "relative"}, format="json")
    assert bad.status_code == 400 and "absolute path" in str(bad.json())


def test_template_and_move_volume_rights_and_effect(mirrored, make_user, engine, node, tmp_path):
    from engine.storage import cfg
    from engine.storage.base import StorageDef

    ctid = mirrored.ctid
    operator = client_for(make_user, "t-operator", "Operator")
    admin = client_for(make_user, "t-admin", "ContainerAdmin")
    refused = admin.post(
        f"/api/containers/{ctid}/move_volume/", {"volume": "rootfs", "storage": "second"}, format="json"
    )
    assert refused.status_code == 400 and "no storage 'second'" in str(refused.json())
    defs = cfg.load(engine.layout.root)
    second = tmp_path / "second"
    second.mkdir()
    os.chmod(tmp_path, 0o755)
    cfg.save(engine.layout.root, {**defs, "second": StorageDef("second", "dir", second, frozenset({"rootdir"}))})
    StorageMirror.objects.create(node=node, name="second", type="dir", content=["rootdir"])
    try:
        body = {"volume": "rootfs", "storage": "second"}
        assert admin.post(f"/api/containers/{ctid}/move_volume/", body, format="json").status_code == 409  # running
        engine.stop(ctid)
        mirrored.status = "stopped"
        mirrored.save()
        assert operator.post(f"/api/containers/{ctid}/move_volume/", body, format="json").status_code == 403
        job = follow(admin, admin.post(f"/api/containers/{ctid}/move_volume/", {**body, "delete": True}, format="json"))
        assert job.status == "ok", job.message
        assert engine.config(ctid).current.get("rootfs")["volume"].startswith("second:")
        assert operator.post(f"/api/containers/{ctid}/template/").status_code == 403
        assert follow(admin, admin.post(f"/api/containers/{ctid}/template/")).status == "ok"
        assert engine.config(ctid).current.values["template"] == "1"
        start = follow(admin, admin.post(f"/api/containers/{ctid}/status/start/"))
        assert start.status == "error" and "is a template" in start.message
    finally:
        engine.destroy(ctid, force=True)
        cfg.save(engine.layout.root, defs)
