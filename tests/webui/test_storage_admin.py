"""Storages added and removed through the API and the node's agent (storage.cfg changed on the node, the
mirror following), each bad field refused by name before any job, and Sys.Modify on / required."""

from __future__ import annotations

import pytest

from tests.webui.api_helpers import client_for
from tests.webui.conftest import wait_job
from webui.models import Job, StorageMirror

pytestmark = pytest.mark.django_db(transaction=True)


def _ok(response) -> Job:
    assert response.status_code == 202, response.content
    job = wait_job(Job.objects.get(pk=response.json()["job"]["id"]))
    assert job.status == "ok", job.message
    return job


def test_add_and_remove_a_dir_storage(agent, node, engine, make_user, tmp_path):
    api = client_for(make_user("st-admin", superuser=True))
    path = tmp_path / "extra"
    body = {"storage": "webextra", "type": "dir", "path": str(path), "content": "rootdir,backup"}
    _ok(api.post(f"/api/nodes/{node.name}/storage/", body, format="json"))
    assert path.is_dir() and "dir: webextra" in (engine.layout.root / "storage.cfg").read_text()
    row = StorageMirror.objects.get(node=node, name="webextra")
    assert sorted(row.content) == ["backup", "rootdir"] and row.total > 0
    listed = [s["name"] for s in api.get(f"/api/nodes/{node.name}/storage/").json()]
    assert "webextra" in listed and "local" in listed
    _ok(api.delete(f"/api/nodes/{node.name}/storage/webextra"))
    assert not StorageMirror.objects.filter(node=node, name="webextra").exists()
    assert "webextra" not in (engine.layout.root / "storage.cfg").read_text() and path.is_dir()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"storage": "1bad"}, "storage"),
        ({"storage": "local"}, "storage"),
        ({"type": "zfs"}, "type"),
        ({"path": "relative/dir"}, "path"),
        ({"path": "/srv/../etc"}, "path"),
        ({"content": "rootdir,bogus"}, "content"),
        ({"colour": "red"}, "colour"),
        ({"path": 5}, "path"),
    ],
)
def test_each_bad_field_is_refused_by_name(node, make_user, change, field):
    from django.utils import timezone

    StorageMirror.objects.create(node=node, name="local", type="dir", content=["rootdir"])
    node.last_seen = timezone.now()
    api = client_for(make_user("st-admin", superuser=True))
    body = {"storage": "webextra", "type": "dir", "path": "/srv/webextra", **change}
    answer = api.post(f"/api/nodes/{node.name}/storage/", body, format="json")
    assert answer.status_code == 400 and field in answer.json()["error"]["fields"], answer.content
    assert api.delete(f"/api/nodes/{node.name}/storage/nosuch").status_code == 400
    assert not Job.objects.exists()


def test_only_sys_modify_on_root_changes_storages(node, make_user):
    auditor = client_for(make_user("st-audit", "Auditor", "/"))
    body = {"storage": "webextra", "type": "dir", "path": "/srv/webextra"}
    assert auditor.post(f"/api/nodes/{node.name}/storage/", body, format="json").status_code == 403
    assert auditor.delete(f"/api/nodes/{node.name}/storage/local").status_code == 403
    assert not Job.objects.exists()
