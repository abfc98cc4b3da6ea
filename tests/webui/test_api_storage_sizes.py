"""The web tier sends no size to a storage that cannot enforce one: the mirror carries the capability."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from engine.storage import cfg
from engine.storage.base import StorageDef
from tests.webui.api_helpers import create_body, fresh_throttles, template_row  # noqa: F401
from tests.webui.conftest import wait_job
from webui.models import ApiToken, Container, Job, StorageMirror
from webui.models.queue import submit

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def overlay_storage(engine, tmp_path):
    """An overlay storage ``ovl`` beside ``local`` in the node's storage.cfg, mirrored by a resync."""
    before = cfg.load(engine.layout.root)
    (tmp_path / "overlay").mkdir()
    cfg.save(
        engine.layout.root,
        {**before, "ovl": StorageDef("ovl", "overlay", tmp_path / "overlay", frozenset({"rootdir"}))},
    )
    yield "ovl"
    if (engine.layout.root / "storage.cfg").exists():
        cfg.save(engine.layout.root, before)


def test_a_storage_that_cannot_enforce_a_size_gets_none(
    agent, node, engine, stored_busybox, ctid_factory, overlay_storage, make_user
):
    assert wait_job(submit("noderesync", node, node.path, node.name)).status == "ok"
    mirrors = {m.name: m.enforces_size for m in StorageMirror.objects.filter(node=node)}
    assert mirrors == {"local": True, "ovl": False}

    admin = make_user("sizes-admin", "Administrator", "/")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {ApiToken.issue(admin, 'sizes')[1]}")
    template_row(node, stored_busybox.removeprefix("local:vztmpl/"))

    refused_id = ctid_factory()
    refused = client.post(
        "/api/containers/",
        create_body(node, refused_id, template=stored_busybox, storage="ovl", disk_size=2),
        format="json",
    )
    assert refused.status_code == 400, refused.content
    assert "'ovl'" in str(refused.json()) and "disk_size" in str(refused.json())
    assert not Container.objects.filter(ctid=refused_id).exists() and not engine.exists(refused_id)

    ctid = ctid_factory()
    response = client.post(
        "/api/containers/",
        create_body(node, ctid, template=stored_busybox, storage="ovl", memory=128, swap=0),
        format="json",
    )
    assert response.status_code == 202, response.content
    job = wait_job(Job.objects.get(pk=response.json()["job"]["id"]))
    assert job.status == "ok", list(job.lines.values_list("text", flat=True))
    assert job.params["rootfs"] == "ovl:0"
    assert engine.config(ctid).get("rootfs")["volume"].startswith("ovl:")
