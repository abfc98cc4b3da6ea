"""An application container made from an OCI archive of the store through the API, as any template: created,
started, its entrypoint's output in the console and in the shutdown job's log."""

from __future__ import annotations

import shutil

import pytest
from rest_framework.test import APIClient

from tests.engine.oci_images import app_image
from tests.webui.api_helpers import create_body, template_row
from tests.webui.test_api_end_to_end import follow
from webui.models import ApiToken

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_oci_template_makes_an_application_container(agent, node, ctid_factory, engine, make_user, tmp_path):
    archive = app_image().write_archive(tmp_path / "app_9.0.tar")
    engine.layout.templates.mkdir(parents=True, exist_ok=True)
    stored = engine.layout.templates / archive.name
    shutil.copy2(archive, stored)
    try:
        admin = make_user("oci-admin", "Administrator", "/")
        _, value = ApiToken.issue(admin, "oci")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {value}")
        template_row(node, archive.name)
        ctid = ctid_factory()
        body = create_body(node, ctid, template=f"local:vztmpl/{archive.name}", memory=128, swap=0, disk_size=1)
        body["start"] = True
        created = follow(client, client.post("/api/containers/", body, format="json"))
        assert created.status == "ok", list(created.lines.values_list("text", flat=True))
        shown = client.get(f"/api/containers/{ctid}/").json()
        assert (shown["status"], shown["init"]) == ("running", "app")
        config = client.get(f"/api/containers/{ctid}/config/").json()["config"]
        assert config["cmode"] == "console" and config["entrypoint"].startswith("/bin/sh -c ")
        stop = follow(client, client.post(f"/api/containers/{ctid}/status/shutdown/", {"timeout": 30}, format="json"))
        assert stop.status == "ok", stop.message
        lines = list(stop.lines.values_list("text", flat=True))
        assert "console: stopping on USR1" in lines, lines
        assert b"greeting=hello-oci" in engine.console_log(ctid)
    finally:
        stored.unlink(missing_ok=True)
