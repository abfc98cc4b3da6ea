"""End-of-life distributions: the mirror reads a container's os-release; one on an ended release is flagged on
its page, in the API's report and on Datacenter -> Protection; one still supported is not."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import Client
from rest_framework.test import APIClient

from tests.webui.conftest import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def mirrored(node, engine, busybox_template, ctid_factory, monkeypatch):
    """``mirrored(os_release)``: a busybox container whose /etc/os-release says that, mirrored by the agent's code."""
    import tasks.mirror
    from tasks.mirror import sync_container

    monkeypatch.setattr(tasks.mirror, "node_engine", lambda: engine)

    def make(text: str):
        ctid = ctid_factory()
        engine.create(ctid, busybox_template, {"hostname": f"eol-{ctid}"})
        (engine._rootfs(engine.config(ctid)) / "etc" / "os-release").write_text(text)
        return sync_container(node, ctid)

    return make


def test_a_container_on_an_ended_release_is_flagged(mirrored, make_user):
    cache.clear()
    old = mirrored('ID=debian\nVERSION_ID="10"\nPRETTY_NAME="Debian GNU/Linux 10 (buster)"\n')
    new = mirrored('ID=debian\nVERSION_ID="13"\nPRETTY_NAME="Debian GNU/Linux 13 (trixie)"\n')
    assert old.os_release == {"ID": "debian", "VERSION_ID": "10", "PRETTY_NAME": "Debian GNU/Linux 10 (buster)"}

    user = make_user("eol-admin", superuser=True)
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    page = client.get(f"/ct/{old.ctid}/").content.decode()
    assert 'id="ct-eol"' in page and "end of life: debian 10" in page and "2022-09-10" in page
    assert 'id="ct-eol"' not in client.get(f"/ct/{new.ctid}/").content.decode()

    api = APIClient()
    api.force_authenticate(user)
    rows = api.get("/api/eol-report/").json()
    assert [(r["ctid"], r["eol"], r["lts"], r["end_of_life"]) for r in rows] == [
        (old.ctid, "2022-09-10", "2024-06-30", True)
    ]
    assert {r["ctid"] for r in api.get("/api/eol-report/", {"all": "1"}).json()} == {old.ctid, new.ctid}
    report = client.get("/datacenter/protection/").content.decode()
    assert f'data-eol="{old.ctid}"' in report and f'data-eol="{new.ctid}"' not in report

    stranger = APIClient()
    stranger.force_authenticate(make_user("eol-nobody"))
    assert stranger.get("/api/eol-report/").json() == []  # containers it may not see are not listed


def test_templates_know_their_releases_end_of_life(make_user, node):
    from webui.models import CatalogEntry

    cache.clear()
    for name, version in (
        ("debian-10-standard_10.7-1_amd64.tar.gz", "10"),
        ("debian-13-standard_13.1-2_amd64.tar.zst", "13"),
    ):
        CatalogEntry.objects.create(node=node, source="pve", section="system", name=name, os="debian", version=version)
    user = make_user("eol-tmpl", superuser=True)
    api = APIClient()
    api.force_authenticate(user)
    rows = {e["name"]: e["eol"] for e in api.get(f"/api/nodes/{node.name}/catalog/").json()["results"]}
    assert rows == {
        "debian-10-standard_10.7-1_amd64.tar.gz": "2022-09-10",
        "debian-13-standard_13.1-2_amd64.tar.zst": "2028-08-09",
    }
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    page = client.get("/templates/").content.decode()
    assert "end of life 2022-09-10" in page and "until 2028-08-09" in page
