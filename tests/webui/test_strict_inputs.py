"""Every body the API reads is checked by a strict serializer (unknown fields, bools as numbers or strings
refused, each by name), and the pages' forms of the same actions are read by the same serializers."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.webui.api_helpers import client_for, error_of
from webui.models import Container, Job, Pool

FETCH = {"HTTP_X_REQUESTED_WITH": "fetch"}


@pytest.fixture
def admin(make_user, node):
    return client_for(make_user("strict-admin", superuser=True))


@pytest.mark.parametrize(
    "url, body, field",
    [
        ("/api/pools/", {"name": 5}, "name"),
        ("/api/pools/", {"name": "p1", "comment": True}, "comment"),
        ("/api/pools/", {"name": "p1", "owner": "x"}, "owner"),
        ("/api/nodes/{node}/templates/download/", {"name": True}, "name"),
        ("/api/nodes/{node}/templates/build/", {"builder": "debian", "packages": "curl"}, "packages"),
        ("/api/nodes/{node}/templates/build/", {"builder": "debian", "packages": [1]}, "packages"),
        ("/api/nodes/{node}/templates/update/", {"source": 1}, "source"),
        (
            "/api/nodes/{node}/template-sources/",
            {"id": "x", "type": "aplinfo", "url": "http://127.0.0.1/", "enabled": "yes"},
            "enabled",
        ),
        ("/api/access/tokens/", {"name": "t1", "scope": "all"}, "scope"),
        ("/api/access/tokens/", {"name": 1}, "name"),
        ("/api/access/acl/", {"path": "/", "user": "strict-admin", "role": "Auditor", "propagate": 1}, "propagate"),
        ("/api/access/roles/", {"name": "r1", "privileges": ["VM.Audit"], "builtin": 1, "extra": 1}, "extra"),
    ],
)
def test_bodies_are_refused_by_field(admin, node, url, body, field):
    answer = admin.post(url.format(node=node.name), body, format="json")
    assert answer.status_code == 400 and field in error_of(answer)["fields"], answer.content
    assert not Pool.objects.exists() and not Job.objects.exists()


def test_bridges_take_a_list_of_strings(admin, node):
    answer = admin.put(f"/api/nodes/{node.name}/bridges/", {"allowed": "docker0"}, format="json")
    assert answer.status_code == 400 and "allowed" in error_of(answer)["fields"]
    answer = admin.put(f"/api/nodes/{node.name}/bridges/", {"allowed": ["docker0"], "managed": []}, format="json")
    assert answer.status_code == 400 and "managed" in error_of(answer)["fields"]


def test_page_forms_are_read_by_the_api_serializers(make_user, node):
    Container.objects.create(ctid=4800, node=node, hostname="sf", status="running", config={"hostname": "sf"})
    client = Client()
    client.force_login(make_user("strict-page", superuser=True))
    answer = client.post("/ct/4800/power/shutdown", {"timeout": "soon"}, **FETCH)
    assert answer.status_code == 400 and "timeout" in answer.json()["error"]["fields"]
    answer = client.post("/ct/4800/clone", {"newid": "abc"}, **FETCH)
    assert answer.status_code == 400 and "newid" in answer.json()["error"]["fields"]
    assert not Job.objects.exists()
    answer = client.post("/ct/4800/power/shutdown", {"timeout": "30", "force_stop": "on"}, **FETCH)
    assert answer.status_code == 202
    assert Job.objects.get(kind="vzshutdown").params == {"timeout": 30, "force_stop": True}


def test_backup_bodies_and_forms_are_read_by_one_serializer(admin, make_user, node):
    Container.objects.create(ctid=4810, node=node, hostname="bk", status="stopped", config={"hostname": "bk"})
    url = "/api/containers/4810/backups/"
    for body, field in (
        ({"protected": "1"}, "protected"),
        ({"mode": "fast"}, "mode"),
        ({"colour": 1}, "colour"),
        ({"exclude": [1]}, "exclude"),
        ({"notes": 5}, "notes"),
    ):
        answer = admin.post(url, body, format="json")
        assert answer.status_code == 400 and field in error_of(answer)["fields"], answer.content
    assert not Job.objects.exists()
    page = Client()
    page.force_login(make_user("strict-bk", superuser=True))
    answer = page.post(
        "/ct/4810/backups/now",
        {"mode": "stop", "compress": "gzip", "protected": "1", "exclude": "/tmp/*\n/var/cache/*"},
        **FETCH,
    )
    assert answer.status_code == 202, answer.content
    params = Job.objects.get(kind="vzdump").params
    assert params["mode"] == "stop" and params["protected"] is True and params["exclude"] == ["/tmp/*", "/var/cache/*"]
