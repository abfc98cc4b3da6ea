"""A stored template with a newer version, on the real agent: the templates page and the page of a container made
from it say so with a button; the rebuild (the busybox builder, offline) runs as a job, after which neither
offers it any more.  A catalog template with a newer catalog version is offered a re-download instead."""

from __future__ import annotations

import re
import shutil

import pytest
from django.test import Client
from rest_framework.test import APIClient

from engine.builders.busybox import BusyboxBuilder
from engine.builders.registry import Offer
from tests.webui.conftest import PASSWORD, wait_job
from webui.models import CatalogEntry, Container, Job, StoredTemplate

pytestmark = pytest.mark.django_db(transaction=True)
OLD = "busybox-1.0.0-1_amd64.tar.zst"


def tree(engine, ctid: int, use):
    """``use(root)`` on the stopped container's root file system (an image volume is mounted for it)."""
    _, driver, vol = engine.storages.resolve(engine.config(ctid).current.values["rootfs"].split(",")[0], ctid)
    with driver.writable_tree(vol) as root:
        return use(root)


def test_an_out_of_date_template_is_offered_a_rebuild_on_its_page_and_its_containers(
    agent, node, engine, busybox_template, ctid_factory, make_user, monkeypatch
):
    import tasks.mirror
    from tasks.mirror import sync_templates

    monkeypatch.setattr(tasks.mirror, "node_engine", lambda: engine)
    store = engine.layout.templates
    store.mkdir(parents=True, exist_ok=True)
    current = store / busybox_template.name
    current.unlink(missing_ok=True)  # other tests' stored_busybox copies it back
    shutil.copy2(busybox_template, store / OLD)
    now = BusyboxBuilder().current_version(Offer("busybox", "busybox", "busybox"))
    try:
        sync_templates(node)
        assert CatalogEntry.objects.get(node=node, name="busybox", buildable=True).version == now

        user = make_user("tu-admin", superuser=True)
        api = APIClient()
        api.force_authenticate(user)
        ctid = ctid_factory()
        body = {"node": node.name, "ctid": ctid, "hostname": f"tu{ctid}", "template": f"local:vztmpl/{OLD}"}
        body.update(password="s3cret!", password_confirm="s3cret!")
        response = api.post("/api/containers/", body, format="json")
        assert response.status_code == 202, response.content
        created = wait_job(Job.objects.get(pk=response.json()["job"]["id"]), timeout=120)
        assert created.status == "ok", created.message
        assert Container.objects.get(ctid=ctid).source_template == OLD

        client = Client()
        assert client.login(username=user.username, password=PASSWORD)
        page = client.get(f"/ct/{ctid}/").content.decode()
        assert 'id="ct-template-update"' in page and f"newer version {now} from the local builder" in page
        templates = client.get(f"/templates/?node={node.name}").content.decode()
        row = re.search(rf'<tr data-stored="{re.escape(OLD)}">.*?</tr>', templates, re.S).group(0)
        assert f"newer version {now}" in row and "Rebuild" in row
        url = re.search(r'<form method="post" action="([^"]+/tmplbuild)"', row).group(1)
        assert 'name="name" value="busybox"' in row

        response = client.post(url, {"name": "busybox"}, HTTP_X_REQUESTED_WITH="fetch")
        assert response.status_code == 202, response.content
        build = wait_job(Job.objects.get(pk=response.json()["job"]["id"]), timeout=120)
        assert build.status == "ok" and build.kind == "tmplbuild", build.message
        assert current.is_file()
        sync_templates(node)
        assert StoredTemplate.objects.filter(node=node, name=current.name).exists()
        page = client.get(f"/ct/{ctid}/").content.decode()
        assert 'id="ct-template-update"' not in page

        # The container can now be rebuilt on the newer stored template: a change of template, after a
        # safety snapshot, that the task page rolls back in one click.
        assert f"newer template stored: {current.name}" in page and 'id="btn-rebuild"' in page
        tree(engine, ctid, lambda root: (root / "root" / "marker").write_text("made on the old template"))
        url = re.search(r'<form method="post" action="([^"]+/rebuild)"', page).group(1)
        response = client.post(url, {"template": current.name}, HTTP_X_REQUESTED_WITH="fetch")
        assert response.status_code == 202, response.content
        job = wait_job(Job.objects.get(pk=response.json()["job"]["id"]), timeout=120)
        lines = list(job.lines.values_list("text", flat=True))
        assert job.status == "ok" and job.summary()["safety_snapshot"] == "pre-template-0", "\n".join(lines)
        assert Container.objects.get(ctid=ctid).source_template == current.name
        config = engine.config(ctid)
        assert config.current.values["hostname"] == f"tu{ctid}" and "pre-template-0" in config.snapshots
        assert not tree(engine, ctid, lambda root: (root / "root" / "marker").exists())
        response = client.post(url, {"template": "nothere.tar.zst"}, HTTP_X_REQUESTED_WITH="fetch")
        assert response.status_code == 400 and "not a template stored on node" in response.content.decode()

        page = client.get(f"/jobs/{job.pk}/").content.decode()
        action = re.search(r'<form method="post" action="([^"]+)" class="inline safety-rollback"', page).group(1)
        response = client.post(action, {"name": "pre-template-0"}, HTTP_X_REQUESTED_WITH="fetch")
        back = wait_job(Job.objects.get(pk=response.json()["job"]["id"]))
        assert back.status == "ok", list(back.lines.values_list("text", flat=True))
        assert tree(engine, ctid, lambda root: (root / "root" / "marker").read_text()) == "made on the old template"

        # A catalog template: a newer archive of its package in the catalog is offered as a re-download.
        StoredTemplate.objects.create(node=node, name="debian-12-standard_12.7-1_amd64.tar.zst", size=1)
        CatalogEntry.objects.create(
            node=node, source="test", name="debian-12-standard_12.12-1_amd64.tar.zst", version="12.12-1"
        )
        templates = client.get(f"/templates/?node={node.name}").content.decode()
        row = re.search(r'<tr data-stored="debian-12-standard_12.7-1_amd64.tar.zst">.*?</tr>', templates, re.S)
        assert "newer version 12.12-1 in the catalog" in row.group(0)
        assert 'value="debian-12-standard_12.12-1_amd64.tar.zst"' in row.group(0) and "/download" in row.group(0)
    finally:
        (store / OLD).unlink(missing_ok=True)
        if not current.exists():
            shutil.copy2(busybox_template, current)
