"""Snapshots, clones and resize through the API: typed bodies, the privilege each needs, 202 with the job."""

from __future__ import annotations

import pytest

from tests.webui.api_helpers import client_for, error_of, fresh_throttles  # noqa: F401 - fixture
from tests.webui.conftest import wait_job
from webui.models import Container, Job


@pytest.fixture
def ct(node):
    return Container.objects.create(
        ctid=700,
        node=node,
        hostname="snap",
        status="stopped",
        snapshots=[{"name": "base", "parent": None, "snaptime": 1_790_000_000}, {"name": "current", "parent": "base"}],
    )


@pytest.mark.django_db
def test_bad_bodies_name_the_field(make_user, ct):
    api = client_for(make_user("boss", superuser=True))
    cases = [
        ("post", "/api/containers/700/snapshots/", {"name": 5}, "name"),
        ("post", "/api/containers/700/snapshots/", {"name": "two words"}, "name"),
        ("post", "/api/containers/700/snapshots/", {"name": "base"}, "name"),  # a duplicate
        ("post", "/api/containers/700/snapshots/", {"name": "ok", "colour": "red"}, "colour"),
        ("post", "/api/containers/700/clone/", {"newid": "701"}, "newid"),
        ("post", "/api/containers/700/clone/", {"newid": 700}, "newid"),  # its own ID: in use
        ("post", "/api/containers/700/clone/", {"newid": 701, "snapshot": "nope"}, "snapshot"),
        ("put", "/api/containers/700/resize/", {"disk": "rootfs"}, "size"),
        ("put", "/api/containers/700/resize/", {"disk": "swap", "size": "1G"}, "disk"),
    ]
    for method, url, body, field in cases:
        response = getattr(api, method)(url, body, format="json")
        assert response.status_code == 400, (url, body, response.content)
        assert field in error_of(response)["fields"], (url, body, response.json())
    response = api.post("/api/containers/700/snapshots/missing/rollback/", format="json")
    assert response.status_code == 400 and "no snapshot 'missing'" in error_of(response)["message"]
    assert not Job.objects.exists() and not Container.objects.filter(ctid=701).exists()


@pytest.mark.django_db
def test_each_operation_needs_its_privilege(make_user, ct):
    operator = client_for(make_user("op", "Operator", "/ct/700"))
    assert operator.get("/api/containers/700/snapshots/").json()["snapshots"][0]["name"] == "base"
    assert operator.post("/api/containers/700/snapshots/", {"name": "x"}, format="json").status_code == 403
    assert operator.post("/api/containers/700/snapshots/base/rollback/").status_code == 403
    assert operator.post("/api/containers/700/clone/", {"newid": 701}, format="json").status_code == 403
    assert (
        operator.put("/api/containers/700/resize/", {"disk": "rootfs", "size": "+1G"}, format="json").status_code == 403
    )
    stranger = client_for(make_user("nobody"))
    assert stranger.post("/api/containers/700/snapshots/", {"name": "x"}, format="json").status_code == 404
    assert not Job.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_snapshot_and_rollback_run_on_the_agent(
    agent, node, make_user, engine, busybox_template, ctid_factory, monkeypatch
):
    import tasks.mirror

    monkeypatch.setattr(tasks.mirror, "node_engine", lambda: engine)
    ctid = ctid_factory()
    engine.create(ctid, busybox_template)
    tasks.mirror.sync_container(node, ctid)
    api = client_for(make_user("boss2", superuser=True))
    response = api.post(f"/api/containers/{ctid}/snapshots/", {"name": "first", "description": "d"}, format="json")
    assert response.status_code == 202 and response["Location"].endswith(f"/api/jobs/{response.json()['job']['id']}/")
    assert wait_job(Job.objects.get(pk=response.json()["job"]["id"])).status == "ok"
    names = [s["name"] for s in api.get(f"/api/containers/{ctid}/snapshots/").json()["snapshots"]]
    assert names == ["first", "current"]
    response = api.post(f"/api/containers/{ctid}/snapshots/first/rollback/")
    assert response.status_code == 202
    assert wait_job(Job.objects.get(pk=response.json()["job"]["id"])).status == "ok"
