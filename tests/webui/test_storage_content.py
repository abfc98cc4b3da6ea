"""A storage's page and a backup's download through the real agent: archives of destroyed containers listed
with restore, the archive's bytes streamed from the node through the broker (no shared disk), and the rights
Proxmox asks of a backup volume."""

from __future__ import annotations

import hashlib
import os

import pytest
from django.test import Client

from tests.webui.api_helpers import client_for
from tests.webui.conftest import wait_job
from webui.models import BackupArchive, Job, StorageMirror
from webui.models.queue import submit

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def destroyed_backup(agent, node, engine, ctid_factory):
    """A 3.5 MiB archive of a container that no longer exists (several chunks of the stream)."""
    ctid = ctid_factory()
    dumpdir = engine.layout.root / "dump"
    dumpdir.mkdir(exist_ok=True)
    path = dumpdir / f"vzdump-lxc-{ctid}-2026_01_02-03_04_05.tar.zst"
    path.write_bytes(os.urandom(3 * (1 << 20) + 12345))
    assert wait_job(submit("noderesync", node, node.path, node.name)).status == "ok"
    yield BackupArchive.objects.get(node=node, name=path.name), path
    path.unlink(missing_ok=True)


def test_download_streams_the_nodes_bytes(destroyed_backup, node, make_user):
    archive, path = destroyed_backup
    api = client_for(make_user("st-root", superuser=True))
    response = api.get(f"/api/backups/{archive.pk}/download/")
    assert response.status_code == 200 and response.streaming
    body = b"".join(response.streaming_content)
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()
    assert response["Content-Disposition"] == f'attachment; filename="{archive.name}"'
    job = wait_job(Job.objects.get(pk=int(response["X-Caisson-Job"])))
    assert job.kind == "backupdl" and job.status == "ok" and job.message == f"{len(body)} bytes sent"


def test_the_storage_page_lists_a_destroyed_containers_backup_with_restore(destroyed_backup, node, make_user):
    archive, _ = destroyed_backup
    client = Client()
    client.force_login(make_user("st-root", superuser=True))
    page = client.get(f"/storage/{node.name}/local/").content.decode()
    assert archive.name in page and "(destroyed)" in page
    assert f'action="/backups/{archive.pk}/restore"' in page and f'value="{archive.ctid}"' in page
    assert f'href="/backups/{archive.pk}/download"' in page
    assert StorageMirror.objects.get(node=node, name="local").total > 0
    assert "% (" in page  # the usage summary


def test_download_rights(destroyed_backup, node, make_user):
    archive, _ = destroyed_backup
    auditor = client_for(make_user("st-audit", "Auditor", "/"))  # Datastore.Audit, VM.Audit: no VM.Backup
    assert auditor.get(f"/api/backups/{archive.pk}/download/").status_code == 404  # the archive is not visible
    from webui.models import AccessEntry, Role

    role = Role.objects.create(name="Backupper", privileges=["VM.Audit", "VM.Backup", "Datastore.Audit"])
    user = make_user("st-backup")
    AccessEntry.objects.create(user=user, role=role, path="/", propagate=True)
    answer = client_for(user).get(f"/api/backups/{archive.pk}/download/")  # sees it; may not take it away
    assert answer.status_code == 403 and "Datastore.AllocateSpace" in answer.json()["error"]["message"]
    assert not Job.objects.filter(kind="backupdl").exists()
