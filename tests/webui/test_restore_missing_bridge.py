"""Through the API and the agent: a Proxmox backup whose net0 names a bridge this node lacks restores with a
warning in the job log, and its start fails naming the interface and the bridge."""

from __future__ import annotations

from pathlib import Path

import pytest
from rest_framework.test import APIClient

from tests.engine.backup_support import PROXMOX_CONF, proxmox_archive
from tests.engine.test_restore_bridges import MISSING, NET0
from tests.webui.conftest import wait_job
from webui.models import BackupArchive, Container, Job
from webui.models.queue import submit

pytestmark = pytest.mark.django_db(transaction=True)


def _job(response) -> Job:
    assert response.status_code == 202, response.content
    return wait_job(Job.objects.get(pk=response.json()["job"]["id"]))


def test_restore_warns_and_start_names_the_bridge(agent, node, engine, busybox_template, ctid_factory, make_user):
    if Path("/sys/class/net", MISSING).exists():
        pytest.skip(f"this host has an interface {MISSING}")
    admin = make_user("br-root", superuser=True)
    api = APIClient()
    api.force_authenticate(admin)
    name = f"vzdump-lxc-{ctid_factory()}-2025_01_02-03_04_05.tar.zst"
    dumpdir = engine.layout.root / "dump"
    dumpdir.mkdir(exist_ok=True)
    proxmox_archive(busybox_template, dumpdir / name, PROXMOX_CONF + NET0)
    try:
        assert wait_job(submit("noderesync", node, node.path, node.name, user=admin)).status == "ok"
        archive = BackupArchive.objects.get(node=node, name=name)
        ctid = ctid_factory()
        restored = _job(api.post(f"/api/backups/{archive.pk}/restore/", {"ctid": ctid}, format="json"))
        log = "\n".join(restored.lines.values_list("text", flat=True))
        assert restored.status == "ok", log
        assert f"warning: net0: bridge '{MISSING}' does not exist on this node" in log
        assert Container.objects.get(ctid=ctid).status == "stopped"

        started = _job(api.post(f"/api/containers/{ctid}/status/start/"))
        assert started.status == "error" and f"net0: bridge '{MISSING}' does not exist" in started.message
    finally:
        (dumpdir / name).unlink(missing_ok=True)
