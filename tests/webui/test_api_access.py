"""Authentication, throttling, CSRF, and the access API: ACL, roles, users, tokens, permissions, audit."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone
from rest_framework.test import APIClient

from tests.webui.api_helpers import client_for, error_of, fresh_throttles  # noqa: F401
from webui.access import Access
from webui.models import AccessEntry, ApiToken, AuditEntry, Container, Node, Pool, Role

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(make_user):
    return make_user("admin", "Administrator", "/")


def token_client(value: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {value}")
    return client


# ---- token authentication ----------------------------------------------------------------------------------


def test_tokens_authenticate_and_fail_cleanly(make_user, node, settings):
    settings.LOGIN_FAILURE_LIMIT = 20  # more failures here than the default limit
    user = make_user("alice", "Auditor", "/")
    token, value = ApiToken.issue(user, "ci")
    assert token_client(value).get("/api/nodes/").status_code == 200
    assert ApiToken.objects.get(pk=token.pk).last_used is not None
    name, _, secret = value.partition("=")
    cases = {
        "wrong secret": f"{name}={secret[:-2]}xx",
        "unknown token": f"alice!other={secret}",
        "malformed": "alice-ci-" + secret,
        "empty": "",
    }
    for label, header in cases.items():
        response = token_client(header).get("/api/nodes/")
        assert response.status_code == 401, label
        assert error_of(response)["status"] == 401 and response["WWW-Authenticate"] == "Token"
    ApiToken.objects.filter(pk=token.pk).update(expires=timezone.now() - timedelta(days=1))
    assert "expired" in error_of(token_client(value).get("/api/nodes/"))["message"]
    ApiToken.objects.filter(pk=token.pk).update(expires=None)
    user.is_active = False
    user.save()
    assert "disabled" in error_of(token_client(value).get("/api/nodes/"))["message"]


def test_failed_token_logins_are_throttled_per_address(make_user, node, settings):
    user = make_user("alice", "Auditor", "/")
    _, value = ApiToken.issue(user, "ci")
    for _ in range(settings.LOGIN_FAILURE_LIMIT):
        assert token_client("alice!ci=wrong").get("/api/nodes/").status_code == 401
    refused = token_client(value).get("/api/nodes/")  # even the right secret, until the window passes
    assert refused.status_code == 429 and "failed token" in error_of(refused)["message"]
    assert "try again in" in error_of(refused)["message"]
    assert int(refused["Retry-After"]) > 0


def test_anonymous_requests_are_refused_and_throttled(node):
    anonymous = APIClient()
    statuses = [anonymous.get("/api/containers/").status_code for _ in range(61)]
    assert statuses[:60] == [401] * 60 and statuses[60] == 429


def test_a_session_post_without_csrf_token_is_refused(make_user, node):
    admin = make_user("admin", "Administrator", "/")
    Container.objects.create(ctid=100, node=node, status="stopped")
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(admin)
    response = client.post("/api/containers/100/status/start/")
    assert response.status_code == 403 and "CSRF" in error_of(response)["message"]
    _, value = ApiToken.issue(admin, "script")
    scripted = APIClient(enforce_csrf_checks=True)
    scripted.credentials(HTTP_AUTHORIZATION=f"Token {value}")
    assert scripted.post("/api/containers/100/status/start/").status_code == 202  # tokens need no CSRF token


# ---- the caller's tokens --------------------------------------------------------------------------------------


def test_token_lifecycle(make_user, node):
    user = make_user("bob", "Auditor", "/")
    client = client_for(user)
    made = client.post("/api/access/tokens/", {"name": "deploy", "comment": "CI"}, format="json")
    assert made.status_code == 201
    value = made.json()["value"]
    assert value.startswith("bob!deploy=") and token_client(value).get("/api/nodes/").status_code == 200
    listed = client.get("/api/access/tokens/").json()["results"]
    assert [t["name"] for t in listed] == ["deploy"] and "value" not in listed[0]
    assert all(value.split("=", 1)[1] not in str(t) for t in listed)
    again = client.post("/api/access/tokens/", {"name": "deploy"}, format="json")
    assert again.status_code == 400
    assert "name" in error_of(client.post("/api/access/tokens/", {"name": "9 bad"}, format="json"))["fields"]
    other = make_user("carol", "Auditor", "/")
    ApiToken.issue(other, "hers")
    assert client.delete("/api/access/tokens/hers/").status_code == 404  # only one's own
    assert client.delete("/api/access/tokens/deploy/").status_code == 204
    assert token_client(value).get("/api/nodes/").status_code == 401
    assert AuditEntry.objects.filter(username="bob", action="token.delete").exists()


# ---- ACL, roles, users ---------------------------------------------------------------------------------------


def test_acl_needs_permissions_modify(make_user, admin, roles, node):
    operator = make_user("op", "ContainerAdmin", "/")
    target = make_user("dave")
    body = {"path": "/ct/100", "user": "dave", "role": "Operator", "propagate": True}
    assert client_for(operator).get("/api/access/acl/").status_code == 403
    assert client_for(operator).post("/api/access/acl/", body, format="json").status_code == 403
    client = client_for(admin)
    made = client.post("/api/access/acl/", body, format="json")
    assert made.status_code == 201, made.content
    assert Access(target).can("VM.PowerMgmt", path="/ct/100")
    group = Group.objects.create(name="ops")
    assert (
        client.post("/api/access/acl/", {"path": "/", "group": "ops", "role": "Auditor"}, format="json").status_code
        == 201
    )
    assert [e["path"] for e in client.get("/api/access/acl/?user=dave").json()["results"]] == ["/ct/100"]
    for bad, field in (
        ({**body, "path": "/vms/1"}, "path"),
        ({**body, "role": "Nope"}, "role"),
        ({**body, "group": group.name}, "user"),
        ({"path": "/", "role": "Auditor"}, "user"),
    ):
        assert field in error_of(client.post("/api/access/acl/", bad, format="json"))["fields"], bad
    assert client_for(operator).delete(f"/api/access/acl/{made.json()['id']}/").status_code == 403
    assert client.delete(f"/api/access/acl/{made.json()['id']}/").status_code == 204
    assert not Access(target).can("VM.PowerMgmt", path="/ct/100")
    assert list(AuditEntry.objects.filter(action__startswith="acl.").values_list("action", flat=True)) == [
        "acl.revoke",
        "acl.grant",
        "acl.grant",
    ]


def test_roles(make_user, admin, roles):
    client = client_for(admin)
    assert {"Administrator", "Operator", "NoAccess"} <= {
        r["name"] for r in client.get("/api/access/roles/").json()["results"]
    }
    made = client.post(
        "/api/access/roles/", {"name": "Powerer", "privileges": ["VM.PowerMgmt", "VM.Audit"]}, format="json"
    )
    assert made.status_code == 201 and made.json() == {
        "name": "Powerer",
        "privileges": ["VM.Audit", "VM.PowerMgmt"],
        "builtin": False,
    }
    bad = client.post("/api/access/roles/", {"name": "X", "privileges": ["VM.Fly"]}, format="json")
    assert "VM.Fly" in error_of(bad)["fields"]["privileges"][0]
    assert client.patch("/api/access/roles/Powerer/", {"privileges": ["VM.Audit"]}, format="json").status_code == 200
    assert Role.objects.get(name="Powerer").privileges == ["VM.Audit"]
    builtin = client.patch("/api/access/roles/Operator/", {"privileges": []}, format="json")
    assert builtin.status_code == 403 and "built-in" in error_of(builtin)["message"]
    assert client.delete("/api/access/roles/Administrator/").status_code == 403
    reader = client_for(make_user("reader", "Auditor", "/"))
    assert reader.get("/api/access/roles/Powerer/").status_code == 200
    assert reader.delete("/api/access/roles/Powerer/").status_code == 403
    assert client.delete("/api/access/roles/Powerer/").status_code == 204


def test_users(make_user, admin):
    client = client_for(admin)
    Group.objects.create(name="ops")
    made = client.post(
        "/api/access/users/", {"username": "erin", "password": "long enough pw", "groups": ["ops"]}, format="json"
    )
    assert made.status_code == 201 and "password" not in made.json() and made.json()["groups"] == ["ops"]
    assert client.login(username="erin", password="long enough pw")
    client.force_login(admin)
    assert client.post("/api/access/users/erin/disable/").json()["is_active"] is False
    assert not client.login(username="erin", password="long enough pw")
    client.force_login(admin)
    assert client.post("/api/access/users/admin/disable/").status_code == 400
    assert client.patch("/api/access/users/erin/", {"is_active": True}, format="json").json()["is_active"] is True
    assert client.post("/api/access/users/", {"username": "erin"}, format="json").status_code == 400
    assert client_for(make_user("op", "ContainerAdmin", "/")).get("/api/access/users/").status_code == 403


def test_effective_permissions(make_user, roles, node):
    pool = Pool.objects.create(name="web")
    Container.objects.create(ctid=100, node=node, pool=pool, status="stopped")
    user = make_user("frank", "Operator", "/pool/web")
    client = client_for(user)
    ct = client.get("/api/access/permissions/?path=/ct/100").json()
    assert ct == [{"path": "/ct/100", "privileges": sorted(roles["Operator"].privileges)}]
    assert client.get("/api/access/permissions/?path=/").json() == [{"path": "/", "privileges": []}]
    everything = {p["path"]: p["privileges"] for p in client.get("/api/access/permissions/").json()}
    assert set(everything) == {"/", "/pool/web"} and "VM.PowerMgmt" in everything["/pool/web"]
    assert client.get("/api/access/permissions/?path=nowhere").status_code == 400


def test_audit_log_needs_sys_audit(make_user, admin, node):
    Container.objects.create(ctid=100, node=node, status="stopped")
    client_for(make_user("op", "Operator", "/ct/100")).delete("/api/containers/100/")  # denied and audited
    assert client_for(make_user("op2", "Operator", "/")).get("/api/audit/").status_code == 403
    entries = client_for(admin).get("/api/audit/?outcome=denied").json()["results"]
    assert [(e["username"], e["action"], e["path"]) for e in entries] == [
        ("op2", "denied Sys.Audit", "/"),
        ("op", "denied VM.Allocate", "/ct/100"),
    ]
    assert client_for(admin).get("/api/audit/?user=op").json()["count"] == 1


# ---- pools ---------------------------------------------------------------------------------------------------------


def test_pools(make_user, admin, node):
    client = client_for(admin)
    assert client.post("/api/pools/", {"name": "web", "comment": "front"}, format="json").status_code == 201
    assert client.post("/api/pools/", {"name": "web"}, format="json").status_code == 400
    assert client.post("/api/pools/", {"name": 5}, format="json").status_code == 400
    Container.objects.create(ctid=100, node=node, status="stopped", pool=Pool.objects.get(name="web"))
    assert client.get("/api/pools/web/").json() == {"name": "web", "comment": "front", "containers": [100]}
    auditor = client_for(make_user("aud", "Auditor", "/pool/web"))
    assert [p["name"] for p in auditor.get("/api/pools/").json()["results"]] == ["web"]
    assert auditor.post("/api/pools/", {"name": "db"}, format="json").status_code == 403
    assert auditor.delete("/api/pools/web/").status_code == 403
    assert client_for(make_user("none")).get("/api/pools/web/").status_code == 404
    assert "still holds" in error_of(client.delete("/api/pools/web/"))["message"]
    Container.objects.filter(ctid=100).update(pool=None)
    assert client.delete("/api/pools/web/").status_code == 204


# ---- visible_containers: the SQL filter agrees with resolving each container -------------------------------------


def test_visible_containers_agrees_with_per_container_resolution(make_user, roles, node):
    other = Node.objects.create(name="other")
    pools = [Pool.objects.create(name=n) for n in ("a", "b")]
    Container.objects.bulk_create(
        [
            Container(ctid=100 + i, node=(node, other)[i % 2], pool=(None, *pools)[i % 3], status="stopped")
            for i in range(24)
        ]
    )
    group = Group.objects.create(name="g")
    cases = [
        [("Administrator", "/", True)],
        [("Auditor", "/", True), ("NoAccess", "/ct/105", True), ("NoAccess", "/pool/b", True)],
        [("Operator", "/nodes/other", True), ("NoAccess", "/ct/103", True)],
        [("Operator", "/pool/a", True), ("Operator", "/ct/101", False)],
        [("Auditor", "/", False)],  # not propagated: the datacenter only
        [("Operator", "/ct/999", True)],  # a container that does not exist
    ]
    for index, grants in enumerate(cases):
        user = make_user(f"u{index}")
        for role, path, propagate in grants:
            AccessEntry.objects.create(user=user, role=roles[role], path=path, propagate=propagate)
        for role, path, propagate in (("NoAccess", "/ct/100", True),) if index == 0 else ():
            user.groups.add(group)
            AccessEntry.objects.create(group=group, role=roles[role], path=path, propagate=propagate)
        access = Access(user)
        expected = sorted(c.ctid for c in Container.objects.select_related("node", "pool") if access.can("VM.Audit", c))
        assert sorted(access.visible_containers(Container.objects.all()).values_list("ctid", flat=True)) == expected, (
            grants
        )
