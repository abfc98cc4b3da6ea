"""Pulling an image through the API: the node agent's job (a real Celery worker) runs skopeo against a
registry on loopback with credentials that are never stored, queued or logged in clear."""

from __future__ import annotations

import base64
import json

import pytest

from engine.oci.registry import Settings
from tests.engine import registry_lab
from tests.engine.oci_images import app_image
from tests.webui.api_helpers import client_for, error_of
from tests.webui.conftest import wait_job
from webui.models import AuditEntry, Job, StoredTemplate

pytestmark = pytest.mark.skipif(not registry_lab.available(), reason="needs docker-registry and skopeo")
USER, PASSWORD = "bob", "pull-Pa55word-9"


@pytest.fixture(scope="module")
def private_registry(tmp_path_factory):
    layout = app_image().write_layout(tmp_path_factory.mktemp("image") / "layout")
    with registry_lab.registry(tmp_path_factory.mktemp("registry"), {USER: PASSWORD}) as address:
        registry_lab.push(layout, address, "team/app:2.0", creds=f"{USER}:{PASSWORD}")
        yield address


@pytest.mark.django_db(transaction=True)
def test_a_pull_job_stores_the_archive_and_never_the_password(
    agent, node, engine, make_user, roles, private_registry, monkeypatch
):
    Settings(insecure=[private_registry]).save(engine.layout.root)
    monkeypatch.setenv("CAISSON_ROOT", str(engine.layout.root))  # as the web server's (services_env)
    admin = client_for(make_user("pulladmin", "Administrator", "/"))
    op = client_for(make_user("pullop", "Operator", "/ct/100"))
    base = f"/api/nodes/{node.name}/templates"
    body = {"reference": f"{private_registry}/team/app:2.0", "username": USER, "password": PASSWORD}
    assert op.post(f"{base}/pull/", body, format="json").status_code == 403
    bad = admin.post(f"{base}/pull/", {"reference": "Not A Ref"}, format="json")
    assert bad.status_code == 400 and "reference" in error_of(bad)["fields"]
    half = admin.post(f"{base}/pull/", {"reference": body["reference"], "username": USER}, format="json")
    assert half.status_code == 400 and "password" in error_of(half)["fields"]
    tags = admin.post(
        f"{base}/tags/",
        {"repository": f"{private_registry}/team/app", "username": USER, "password": PASSWORD},
        format="json",
    )
    assert tags.status_code == 200 and tags.json() == ["2.0"], tags.content
    refused = admin.post(f"{base}/tags/", {"repository": f"{private_registry}/team/app"}, format="json")
    assert refused.status_code == 400
    accepted = admin.post(f"{base}/pull/", body, format="json")
    assert accepted.status_code == 202, accepted.content
    job = wait_job(Job.objects.get(pk=accepted.json()["job"]["id"]), timeout=120)
    try:
        assert job.status == "ok", job.message
        assert (job.kind, job.target) == ("ociregistrypull", "app_2.0.tar")
        assert (engine.layout.templates / "app_2.0.tar").is_file()
        assert StoredTemplate.objects.filter(node=node, name="app_2.0.tar").exists()
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        stored = json.dumps(job.params) + json.dumps([a.detail for a in AuditEntry.objects.all()])
        stored += "\n".join(job.lines.values_list("text", flat=True))
        assert PASSWORD not in stored and token not in stored
        assert "registry_password_sealed" in job.params
        assert AuditEntry.objects.get(action="ociregistrypull").detail["params"]["registry_password_sealed"] == "set"
        assert PASSWORD.encode() not in agent.log.read_bytes()
        assert any("digests verified" in line for line in job.lines.values_list("text", flat=True))
        kept = engine.layout.templates / ".app_2.0.pull"  # what an interrupted pull keeps for its resume
        (kept / "blobs").mkdir(parents=True)
        dropped = admin.post(f"{base}/pull/", {"reference": body["reference"], "abandon": True}, format="json")
        assert dropped.status_code == 202
        dropped = wait_job(Job.objects.get(pk=dropped.json()["job"]["id"]))
        assert dropped.status == "ok" and not kept.exists()
        assert "dropped what the interrupted pull kept" in list(dropped.lines.values_list("text", flat=True))
    finally:
        (engine.layout.templates / "app_2.0.tar").unlink(missing_ok=True)
        Settings().save(engine.layout.root)


@pytest.mark.django_db(transaction=True)
def test_registry_settings_through_the_api(agent, node, engine, make_user, roles, monkeypatch):
    monkeypatch.setenv("CAISSON_ROOT", str(engine.layout.root))
    admin = client_for(make_user("regadmin", "Administrator", "/"))
    tenant = client_for(make_user("regtenant", "Administrator", f"/nodes/{node.name}", propagate=False))
    url = f"/api/nodes/{node.name}/oci-registries/"
    wanted = {"mirrors": {"docker.io": ["mirror.lan:5000"]}, "insecure": ["mirror.lan:5000"]}
    assert tenant.put(url, wanted, format="json").status_code == 403  # Sys.Modify on / only
    bad = admin.put(url, {"mirrors": {"docker.io": ["not a host"]}}, format="json")
    assert bad.status_code == 400
    try:
        accepted = admin.put(url, wanted, format="json")
        assert accepted.status_code == 202, accepted.content
        job = wait_job(Job.objects.get(pk=accepted.json()["job"]["id"]))
        assert (job.kind, job.status) == ("ocisettings", "ok"), job.message
        assert Settings.load(engine.layout.root) == Settings(**wanted)
        assert admin.get(url).json() == wanted
        assert tenant.get(url).status_code == 200
    finally:
        Settings().save(engine.layout.root)
