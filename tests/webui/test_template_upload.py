"""A template uploaded in chunks through the API to the node's agent (through the broker, no shared disk):
a chunk at the wrong offset is refused with the node's offset (how a client resumes), the node's SHA-256 is
given back, the file lands in the node's store; bad input refused by name; the upload is its user's."""

from __future__ import annotations

import hashlib
import os

import pytest

from tests.webui.api_helpers import client_for
from tests.webui.conftest import wait_job
from webui.models import Job, StoredTemplate

pytestmark = pytest.mark.django_db(transaction=True)
NAME = f"upload-{os.getpid()}_1.0_amd64.tar.zst"


def _put(api, location, data: bytes, first: int, size: int):
    headers = {"HTTP_CONTENT_RANGE": f"bytes {first}-{first + len(data) - 1}/{size}"}
    return api.put(location, data, content_type="application/octet-stream", **headers)


def test_chunked_upload_with_a_resume_and_the_checksum(agent, node, engine, make_user):
    admin = make_user("up-root", superuser=True)
    api = client_for(admin)
    data = os.urandom(5 * (1 << 20) + 777)
    started = api.post(f"/api/nodes/{node.name}/templates/upload", {"filename": NAME, "size": len(data)}, format="json")
    assert started.status_code == 201, started.content
    location = started.json()["location"]
    stored = engine.layout.root / "template" / "cache" / NAME
    try:
        first = _put(api, location, data[: 2 << 20], 0, len(data))
        assert first.status_code == 200 and first.json()["offset"] == 2 << 20
        lost = _put(api, location, data[3 << 20 :], 3 << 20, len(data))  # a chunk skipped: refused with the offset
        assert lost.status_code == 416 and lost.json()["offset"] == 2 << 20
        again = _put(api, location, data[: 2 << 20], 0, len(data))  # a chunk sent twice: refused too
        assert again.status_code == 416
        assert api.get(location).json()["offset"] == 2 << 20
        done = _put(api, location, data[2 << 20 :], 2 << 20, len(data))
        assert done.status_code == 200 and done.json()["done"], done.content
        assert done.json()["sha256"] == hashlib.sha256(data).hexdigest()
        job = wait_job(Job.objects.get(pk=done.json()["job"]))
        assert job.status == "ok" and hashlib.sha256(data).hexdigest() in job.message
        assert stored.read_bytes() == data
        assert StoredTemplate.objects.filter(node=node, name=NAME, size=len(data)).exists()
        assert not [p for p in stored.parent.iterdir() if p.name.startswith(".upload-")]

        other = client_for(make_user("up-other", superuser=True))
        assert other.get(location).status_code == 403
    finally:
        stored.unlink(missing_ok=True)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"filename": "../etc/passwd.tar.gz", "size": 10}, "filename"),
        ({"filename": "notes.txt", "size": 10}, "filename"),
        ({"filename": NAME, "size": 0}, "size"),
        ({"filename": NAME, "size": "10"}, "size"),
        ({"filename": NAME, "size": 10, "sha": "x"}, "sha"),
    ],
)
def test_bad_starts_are_refused_by_name(node, make_user, body, field):
    api = client_for(make_user("up-root", superuser=True))
    answer = api.post(f"/api/nodes/{node.name}/templates/upload", body, format="json")
    assert answer.status_code == 400 and field in answer.json()["error"]["fields"], answer.content
    assert not Job.objects.exists()


def test_an_auditor_cannot_upload(node, make_user):
    api = client_for(make_user("up-audit", "Auditor", "/"))
    answer = api.post(f"/api/nodes/{node.name}/templates/upload", {"filename": NAME, "size": 10}, format="json")
    assert answer.status_code == 403 and "Datastore.AllocateTemplate" in answer.json()["error"]["message"]
