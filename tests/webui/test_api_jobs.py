"""Jobs, nodes and templates through the API, and the OpenAPI schema with its local docs."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.webui.api_helpers import client_for, error_of, fresh_throttles, template_row  # noqa: F401
from tests.webui.conftest import REPO
from webui.models import CatalogEntry, Container, Job, JobLine, MetricSample, Node

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(make_user, roles, node):
    Container.objects.create(ctid=100, node=node, status="stopped")
    Container.objects.create(ctid=101, node=node, status="stopped")
    return {
        "admin": make_user("admin", "Administrator", "/"),
        "op": make_user("op", "Operator", "/ct/100"),
        "nodeaudit": make_user("nodeaudit", "Auditor", f"/nodes/{node.name}", propagate=False),
        "tmpl": make_user("tmpl", "Administrator", f"/nodes/{node.name}", propagate=False),
        "nobody": make_user("nobody"),
    }


def job(node, path, target, kind="vzstart", user=None, status="ok"):
    return Job.objects.create(node=node, kind=kind, path=path, target=target, user=user, status=status)


# ---- jobs ----------------------------------------------------------------------------------------------------------


def test_job_visibility_and_filters(people, node):
    mine = job(node, "/ct/101", "101", user=people["nobody"])
    on_100 = job(node, "/ct/100", "100", kind="vzstop")
    on_101 = job(node, "/ct/101", "101")
    on_node = job(node, node.path, "x.tar.zst", kind="download", status="error")
    seen = {
        who: [j["id"] for j in client_for(people[who]).get("/api/jobs/").json()["results"]]
        for who in ("admin", "op", "nodeaudit", "nobody")
    }
    assert seen["admin"] == [on_node.pk, on_101.pk, on_100.pk, mine.pk]  # newest first
    assert seen["op"] == [on_100.pk] and seen["nobody"] == [mine.pk]
    assert seen["nodeaudit"] == [on_node.pk]
    admin = client_for(people["admin"])
    assert [j["id"] for j in admin.get("/api/jobs/?target=101&kind=vzstart").json()["results"]] == [on_101.pk, mine.pk]
    assert [j["id"] for j in admin.get("/api/jobs/?status=error").json()["results"]] == [on_node.pk]
    assert admin.get(f"/api/jobs/?node={node.name}").json()["count"] == 4
    assert admin.get("/api/jobs/?node=elsewhere").json()["count"] == 0
    op = client_for(people["op"])
    detail = op.get(f"/api/jobs/{on_100.pk}/").json()
    assert detail["upid"].startswith(f"UPID:{node.name}:") and detail["kind"] == "vzstop"
    assert op.get(f"/api/jobs/{on_101.pk}/").status_code == 404


def test_job_log_pages(people, node):
    record = job(node, "/ct/100", "100", status="running")
    JobLine.objects.bulk_create([JobLine(job=record, seq=n, text=f"line {n}") for n in range(1, 8)])
    client = client_for(people["op"])
    first = client.get(f"/api/jobs/{record.pk}/log/?limit=3").json()
    assert [line["text"] for line in first["lines"]] == ["line 1", "line 2", "line 3"]
    assert (first["next"], first["complete"], first["status"]) == (4, False, "running")
    rest = client.get(f"/api/jobs/{record.pk}/log/?start=4").json()
    assert [line["seq"] for line in rest["lines"]] == [4, 5, 6, 7] and rest["next"] == 8
    Job.objects.filter(pk=record.pk).update(status="ok")
    done = client.get(f"/api/jobs/{record.pk}/log/?start=8").json()
    assert done["lines"] == [] and done["next"] == 8 and done["complete"] is True
    assert client.get(f"/api/jobs/{record.pk}/log/?start=5&limit=2").json()["complete"] is False
    for bad in ("start=x", "start=0", "limit=0", "limit=100000"):
        assert client.get(f"/api/jobs/{record.pk}/log/?{bad}").status_code == 400, bad
    assert client_for(people["nobody"]).get(f"/api/jobs/{record.pk}/log/").status_code == 404


def test_cancel(people, node):
    queued = job(node, "/ct/100", "100", user=people["op"], status="queued")
    other = job(node, "/ct/100", "100", kind="vzstop", status="queued")
    op = client_for(people["op"])
    assert op.post(f"/api/jobs/{other.pk}/cancel/").status_code == 403  # not theirs, no Sys.Modify
    cancelled = op.post(f"/api/jobs/{queued.pk}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = op.post(f"/api/jobs/{queued.pk}/cancel/")
    assert again.status_code == 409 and "already ended" in error_of(again)["message"]
    assert client_for(people["admin"]).post(f"/api/jobs/{other.pk}/cancel/").status_code == 200


# ---- nodes -----------------------------------------------------------------------------------------------------------


def test_nodes_and_their_metrics(people, node):
    MetricSample.objects.bulk_create(
        [
            MetricSample(scope=f"node/{node.name}", step=10, ts=t, cpu=0.25 * n, memory=n, memory_total=100)
            for n, t in enumerate((10, 20))
        ]
    )
    Node.objects.create(name="gone", last_seen=timezone.now() - timedelta(hours=1))
    client = client_for(people["op"])
    listed = {n["name"]: n for n in client.get("/api/nodes/").json()["results"]}
    assert listed[node.name]["online"] is True and listed["gone"]["online"] is False and listed[node.name]["cpus"] == 2
    detail = client.get(f"/api/nodes/{node.name}/").json()
    assert detail["metrics"]["ts"] == 20 and detail["metrics"]["cpu"] == 0.25 and detail["containers"] == 2
    assert client.get("/api/nodes/nowhere/").status_code == 404
    assert client.get(f"/api/nodes/{node.name}/metrics/").status_code == 403  # Sys.Audit on the node
    chart = client_for(people["nodeaudit"]).get(f"/api/nodes/{node.name}/metrics/?timeframe=hour").json()
    assert chart["ts"] == [10, 20] and chart["cpu"] == [0.0, 0.25] and chart["memory_total"] == [100, 100]


# ---- templates ----------------------------------------------------------------------------------------------------


@pytest.fixture
def catalog(node):
    template_row(node)
    CatalogEntry.objects.bulk_create(
        [
            CatalogEntry(
                node=node,
                source="pve",
                section="system",
                name="debian-12-standard_12.7-1_amd64.tar.zst",
                os="debian",
                description="Debian 12 Bookworm",
            ),
            CatalogEntry(
                node=node,
                source="pve",
                section="turnkeylinux",
                name="debian-12-turnkey-wordpress.tar.gz",
                os="debian",
                description="WordPress",
            ),
            CatalogEntry(
                node=node, source="local", section="local", name="busybox-1.36.1-1_amd64.tar.zst", buildable=True
            ),
        ]
    )


def test_template_store_and_catalog(people, node, catalog):
    client = client_for(people["tmpl"])
    store = client.get(f"/api/nodes/{node.name}/templates/").json()["results"]
    assert [(t["name"], t["volid"]) for t in store] == [
        ("busybox-1.36.1-1_amd64.tar.zst", "local:vztmpl/busybox-1.36.1-1_amd64.tar.zst")
    ]
    names = [e["name"] for e in client.get(f"/api/nodes/{node.name}/catalog/?section=system").json()["results"]]
    assert names == ["debian-12-standard_12.7-1_amd64.tar.zst"]
    assert client.get(f"/api/nodes/{node.name}/catalog/?search=wordpress").json()["count"] == 1
    assert client_for(people["op"]).get(f"/api/nodes/{node.name}/templates/").status_code == 403


def test_template_jobs(people, node, catalog):
    client = client_for(people["tmpl"])
    base = f"/api/nodes/{node.name}/templates"
    download = client.post(f"{base}/download/", {"name": "debian-12-standard_12.7-1_amd64.tar.zst"}, format="json")
    assert download.status_code == 202
    assert Job.objects.get(pk=download.json()["job"]["id"]).kind == "download"
    again = client.post(f"{base}/download/", {"name": "debian-12-standard_12.7-1_amd64.tar.zst"}, format="json")
    assert again.status_code == 409 and error_of(again)["job"] == download.json()["job"]["id"]
    for bad in ({"name": "nope.tar.zst"}, {"name": "busybox-1.36.1-1_amd64.tar.zst"}, {"name": 3}, {}):
        assert "name" in error_of(client.post(f"{base}/download/", bad, format="json"))["fields"], bad
    build = client.post(
        f"{base}/build/", {"builder": "debian", "suite": "bookworm", "packages": ["nginx"]}, format="json"
    )
    assert build.status_code == 202
    built = Job.objects.get(pk=build.json()["job"]["id"])
    assert (built.kind, built.target, built.params) == (
        "tmplbuild",
        "debian-bookworm",
        {"builder": "debian", "suite": "bookworm", "packages": ["nginx"]},
    )
    assert "builder" in error_of(client.post(f"{base}/build/", {"builder": "arch"}, format="json"))["fields"]
    assert (
        "packages"
        in error_of(client.post(f"{base}/build/", {"builder": "debian", "packages": "nginx"}, format="json"))["fields"]
    )
    assert (
        "packages"
        in error_of(client.post(f"{base}/build/", {"builder": "debian", "packages": ["-x"]}, format="json"))["fields"]
    )
    assert client.post(f"{base}/update/").status_code == 202
    removed = client.delete(f"{base}/busybox-1.36.1-1_amd64.tar.zst/")
    assert removed.status_code == 202 and Job.objects.get(pk=removed.json()["job"]["id"]).kind == "tmplremove"
    assert client.delete(f"{base}/nothing.tar.zst/").status_code == 404
    op = client_for(people["op"])
    assert op.post(f"{base}/update/").status_code == 403
    assert op.delete(f"{base}/busybox-1.36.1-1_amd64.tar.zst/").status_code == 403
    Node.objects.filter(pk=node.pk).update(last_seen=timezone.now() - timedelta(minutes=5))
    offline = client.post(f"{base}/build/", {"builder": "busybox"}, format="json")
    assert offline.status_code == 503 and "offline" in error_of(offline)["message"]


# ---- schema and docs -------------------------------------------------------------------------------------------------


def test_schema_validates_without_warnings(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "spectacular",
            "--validate",
            "--fail-on-warn",
            "--file",
            str(tmp_path / "schema.yml"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    schema = (tmp_path / "schema.yml").read_text()
    assert "/api/containers/{ctid}/status/{command}/" in schema and "tokenAuth" in schema


def test_docs_are_served_locally(client, make_user):
    client.force_login(make_user("reader", "Auditor"))
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "swagger-ui" in html and "cdn" not in html.lower() and "/static/drf_spectacular_sidecar/" in html
    assert "cdn" not in client.get("/api/docs/?script=").content.decode().lower()
    assert client.get("/api/schema/", HTTP_ACCEPT="application/json").status_code == 200


# Proxmox's own UPID pattern (PVE::Tools::upid_decode): node, pid, pstart, starttime, type, id, user@realm.
PVE_UPID = re.compile(
    r"^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):"
    r"([0-9A-Fa-f]{8}):([^:\s]+):([^:\s]*):([^:\s]+):$"
)


def test_upids_decode_as_proxmox_decodes_them(people, node):
    by_user = job(node, "/ct/100", "100", user=people["op"])
    by_nobody = job(node, "/", "")
    for record, user in ((by_user, "op@pve"), (by_nobody, "root@pam")):
        match = PVE_UPID.match(record.upid)
        assert match, record.upid
        assert match.group(1) == node.name and int(match.group(3), 16) == record.pk
        assert int(match.group(5), 16) == int(record.created.timestamp())
        assert (match.group(6), match.group(7), match.group(8)) == (record.kind, record.target, user)
