"""HTTP defaults: a Content-Security-Policy on every answer, cookies Secure over HTTPS, the API's schema and docs
behind login, and one answer (404) for what a user may not see: another tenant's container, job, archive, pool."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from tests.webui.api_helpers import client_for, fresh_throttles  # noqa: F401 - fixture
from tests.webui.conftest import PASSWORD
from webui.models import BackupArchive, Container, Job, Pool

pytestmark = pytest.mark.django_db
FETCH = {"HTTP_X_REQUESTED_WITH": "fetch"}


@pytest.mark.parametrize("url", ["/login/", "/", "/api/nodes/", "/admin/login/", "/api/schema/"])
def test_every_answer_has_a_content_security_policy(url):
    policy = Client().get(url)["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self';" in policy + ";"
    assert "object-src 'none'" in policy and "frame-ancestors 'self'" in policy and "unsafe-eval" not in policy


def test_session_and_csrf_cookies_are_secure_over_https_only(make_user):
    make_user("carol")
    plain = Client(REMOTE_ADDR="192.0.2.1").post("/login/", {"username": "carol", "password": PASSWORD})
    assert plain.status_code == 302 and not plain.cookies["sessionid"]["secure"]
    tls = Client(REMOTE_ADDR="192.0.2.1")
    assert tls.get("/login/", secure=True).cookies["csrftoken"]["secure"]
    answer = tls.post("/login/", {"username": "carol", "password": PASSWORD}, secure=True)
    assert answer.status_code == 302 and answer.cookies["sessionid"]["secure"]
    assert answer.cookies["sessionid"]["httponly"]


def test_the_api_schema_and_docs_need_a_login(make_user):
    anonymous = Client()
    assert anonymous.get("/api/schema/").status_code == 401
    docs = anonymous.get("/api/docs/")
    assert docs.status_code == 302 and docs["Location"].startswith("/login/")
    reader = client_for(make_user("reader", "Auditor"))
    assert reader.get("/api/schema/").status_code == 200
    page = reader.get("/api/docs/")
    assert page.status_code == 200 and b"<script>" not in page.content  # the init script is a file of its own
    assert reader.get("/api/docs/?script=").status_code == 200


@pytest.fixture
def tenants(node, make_user):
    """Two tenants, each ContainerAdmin on their own pool with one container; an archive and a job of B's."""
    pool_a, pool_b = Pool.objects.create(name="tenant-a"), Pool.objects.create(name="tenant-b")
    Container.objects.create(ctid=301, node=node, hostname="a", status="stopped", pool=pool_a)
    Container.objects.create(ctid=302, node=node, hostname="b", status="stopped", pool=pool_b)
    alice = make_user("alice", "ContainerAdmin", "/pool/tenant-a")
    bob = make_user("bob", "ContainerAdmin", "/pool/tenant-b")
    archive = BackupArchive.objects.create(
        node=node,
        storage="local",
        ctid=302,
        size=1,
        format="zstd",
        name="vzdump-lxc-302-2026_01_01-00_00_00.tar.zst",
        time=timezone.now(),
    )
    job = Job.objects.create(node=node, kind="vzstart", path="/ct/302", target="302", user=bob)
    return alice, archive, job


def test_another_tenants_objects_answer_404_through_the_api(tenants):
    alice, archive, job = tenants
    api = client_for(alice)
    assert api.get("/api/containers/301/").status_code == 200
    for method, url in (
        ("get", "/api/containers/302/"),
        ("post", "/api/containers/302/status/start/"),
        ("delete", "/api/containers/302/"),
        ("get", f"/api/jobs/{job.pk}/"),
        ("get", f"/api/backups/{archive.pk}/"),
        ("post", f"/api/backups/{archive.pk}/restore/"),
        ("get", "/api/pools/tenant-b/"),
    ):
        assert getattr(api, method)(url, {}, format="json").status_code == 404, (method, url)
    # Moving one's own container into another tenant's pool: "no pool", as for a pool that does not exist.
    moved = api.put("/api/containers/301/pool/", {"pool": "tenant-b"}, format="json")
    missing = api.put("/api/containers/301/pool/", {"pool": "no-such-pool"}, format="json")
    assert moved.status_code == missing.status_code == 400 and "no pool" in moved.content.decode()
    assert Container.objects.get(ctid=301).pool.name == "tenant-a"


def test_another_tenants_objects_answer_404_on_the_pages(tenants):
    alice, archive, job = tenants
    pages = Client()
    pages.force_login(alice)
    assert pages.get("/ct/301/").status_code == 200
    for url in ("/ct/302/", "/ct/302/backup/", f"/jobs/{job.pk}/", "/ct/302/console/term/"):
        assert pages.get(url).status_code == 404, url
    assert pages.post("/ct/302/power/start", **FETCH).status_code == 404
    assert pages.post(f"/backups/{archive.pk}/verify", **FETCH).status_code == 404
    assert not Job.objects.exclude(pk=job.pk).exists()
