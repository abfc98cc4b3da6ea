"""One error body for every JSON answer: the API's, the pages' (``fetch``) and Django's own handlers'."""

from __future__ import annotations

from django.test import Client

from webui.models import Container

FETCH = {"HTTP_X_REQUESTED_WITH": "fetch"}
KEYS = {"status", "message", "fields", "job"}


def body_of(response) -> dict:
    data = response.json()
    assert set(data) == {"error"}, data
    assert KEYS <= set(data["error"]) and data["error"]["status"] == response.status_code, data
    return data["error"]


def test_pages_and_api_answer_the_same_body_for_the_same_refusal(make_user, node):
    Container.objects.create(ctid=4700, node=node, hostname="eb", status="running", config={"hostname": "eb"})
    client = Client()
    client.force_login(make_user("eb-admin", superuser=True))
    page = body_of(client.post("/ct/4700/snapshot/snapshot", {"name": "has space"}, **FETCH))
    api = body_of(
        client.post("/api/containers/4700/snapshots/", {"name": "has space"}, content_type="application/json")
    )
    assert page["fields"] == api["fields"] and set(page["fields"]) == {"name"} and page["message"] == api["message"]
    page = body_of(client.post("/ct/4700/destroy", **FETCH))
    api = body_of(client.delete("/api/containers/4700/"))
    assert page["status"] == api["status"] == 409 and page["message"] == api["message"] and page["job"] is None
    gone = body_of(client.post("/ct/4701/destroy", **FETCH))
    assert gone["gone"] is True and "no longer exists" in gone["message"]


def test_djangos_own_handlers_answer_the_body_for_the_api_and_fetch(make_user):
    client = Client()
    client.force_login(make_user("eb-user"))
    assert body_of(client.get("/api/no-such-thing/"))["status"] == 404
    assert body_of(client.get("/no-such-page/", **FETCH))["status"] == 404
    assert b"<html" in client.get("/no-such-page/").content.lower()
    csrf = Client(enforce_csrf_checks=True)
    csrf.force_login(make_user("eb-csrf", superuser=True))
    assert "CSRF" in body_of(csrf.post("/ct/4700/power/start", **FETCH))["message"]
