"""Through the API with the real node agent: create and start a busybox container, stop it, destroy it."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.webui.api_helpers import create_body, fresh_throttles, template_row  # noqa: F401
from tests.webui.conftest import wait_job
from webui.models import ApiToken, Job

pytestmark = pytest.mark.django_db(transaction=True)


def follow(client: APIClient, response) -> Job:
    assert response.status_code == 202, response.content
    assert client.get(response["Location"]).status_code == 200
    return wait_job(Job.objects.get(pk=response.json()["job"]["id"]))


def test_create_start_stop_destroy_through_the_api(agent, node, stored_busybox, ctid_factory, engine, make_user):
    admin = make_user("api-admin", "Administrator", "/")
    _, value = ApiToken.issue(admin, "e2e")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {value}")
    template_row(node, stored_busybox.removeprefix("local:vztmpl/"))
    ctid = ctid_factory()

    body = create_body(node, ctid, template=stored_busybox, memory=128, swap=0, disk_size=1, start=True)
    created = follow(client, client.post("/api/containers/", body, format="json"))
    assert created.status == "ok", list(created.lines.values_list("text", flat=True))
    log = client.get(f"/api/jobs/{created.pk}/log/").json()
    assert log["complete"] and log["lines"][0]["text"] == f"starting vzcreate {ctid}"
    assert log["lines"][-1]["text"] == "TASK OK"
    shown = client.get(f"/api/containers/{ctid}/").json()
    assert (shown["status"], shown["hostname"], shown["init"]) == ("running", f"web{ctid}", "busybox")
    assert engine.status(ctid).status == "running"
    config = client.get(f"/api/containers/{ctid}/config/").json()
    assert config["config"]["memory"] == "128" and len(config["digest"]) == 40

    stopped = follow(client, client.post(f"/api/containers/{ctid}/status/stop/"))
    assert stopped.status == "ok" and engine.status(ctid).status == "stopped"
    assert client.get(f"/api/containers/{ctid}/").json()["status"] == "stopped"

    destroyed = follow(client, client.delete(f"/api/containers/{ctid}/"))
    assert destroyed.status == "ok" and not engine.exists(ctid)
    assert client.get(f"/api/containers/{ctid}/").status_code == 404
    assert client.post(f"/api/containers/{ctid}/status/start/").status_code == 404
