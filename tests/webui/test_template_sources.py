"""Template sources through the API, the page and the node agent: edits, per-source failure, the news.

Indexes come from a loopback HTTP server (the fixture indexes of ``tests/engine/data``); a source that
cannot be reached is a loopback port nothing listens on. No test reaches the default sources' servers.
"""

from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import threading

import pytest

from engine.templates.store import TemplateStore
from tests.engine.test_template_sources import DATA, _closed_port
from tests.webui.api_helpers import client_for, error_of
from tests.webui.conftest import wait_job
from webui.models import CatalogEntry, Job, TemplateSource
from webui.models.queue import submit

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def index_server(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    (www / "aplinfo-pve-9.dat.gz").write_bytes(gzip.compress((DATA / "aplinfo-pve.dat").read_bytes()))
    shutil.copy(DATA / "aplinfo-turnkey.dat", www / "aplinfo.dat")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def node_sources(engine):
    """The node's sources.json starts empty (never the defaults: they name real servers) and is put back."""
    store = TemplateStore(engine.layout.root)
    previous = store.sources_file.read_text() if store.sources_file.exists() else None
    store.set_sources([])
    yield store
    if previous is None:
        store.sources_file.unlink(missing_ok=True)
    else:
        store.sources_file.write_text(previous)
    store.status_file.unlink(missing_ok=True)


def _done(response):
    assert response.status_code == 202, response.content
    return wait_job(Job.objects.get(pk=response.json()["job"]["id"]))


def test_admin_edits_sources_and_a_failing_one_is_shown(agent, node, make_user, node_sources, index_server):
    admin = client_for(make_user("admin", superuser=True))
    base = f"/api/nodes/{node.name}/template-sources/"
    assert (
        _done(
            admin.post(
                base, {"id": "pve", "type": "aplinfo", "url": index_server + "aplinfo-pve-9.dat.gz"}, format="json"
            )
        ).status
        == "ok"
    )
    assert (
        _done(
            admin.post(base, {"id": "turnkey", "type": "aplinfo", "url": index_server + "aplinfo.dat"}, format="json")
        ).status
        == "ok"
    )
    dead = f"http://127.0.0.1:{_closed_port()}/"
    assert _done(admin.post(base, {"id": "gone", "type": "simplestreams", "url": dead}, format="json")).status == "ok"
    assert [s.id for s in node_sources.sources()] == ["pve", "turnkey", "gone"]

    update = wait_job(submit("aptupdate", node, node.path, "", user=make_user("admin2", superuser=True)))
    log = "\n".join(update.lines.values_list("text", flat=True))
    assert update.status == "error" and "source gone" in update.message
    assert "pve: 4 templates" in log and "turnkey: 2 templates" in log and "gone: update failed" in log
    rows = {r["id"]: r for r in admin.get(base).json()["results"]}
    assert rows["gone"]["last_error"] and rows["gone"]["last_success"] is None
    assert rows["pve"]["count"] == 4 and rows["pve"]["last_success"] and not rows["pve"]["last_error"]
    assert rows["pve"]["news_headline"] == "News displayed on the admin interface"
    debian = CatalogEntry.objects.get(node=node, name="debian-12-standard_12.12-1_amd64.tar.zst")
    assert debian.headline == "Debian 12 Bookworm (standard)" and debian.description.startswith("A small Debian")

    page = admin.get(f"/templates/?node={node.name}").content.decode()
    assert 'data-source="gone" class="failed"' in page and "Connection refused" in page
    sources_page = admin.get("/datacenter/template-sources/").content.decode()
    assert "Welcome to the template index" in sources_page and "<b>Welcome" not in sources_page  # text, not markup

    # Disable from the page, edit and remove through the API.
    disabled = admin.post(
        f"/datacenter/template-sources/{node.name}/disable", {"id": "gone"}, HTTP_X_REQUESTED_WITH="fetch"
    )
    assert disabled.status_code == 202, disabled.content
    wait_job(Job.objects.get(pk=disabled.json()["job"]["id"]))
    assert not TemplateSource.objects.get(node=node, source_id="gone").enabled
    assert _done(admin.put(base + "turnkey", {"url": index_server + "aplinfo.dat.gz"}, format="json")).status == "ok"
    assert node_sources.sources()[1].url.endswith("aplinfo.dat.gz")
    assert _done(admin.delete(base + "gone")).status == "ok"
    assert [s.id for s in node_sources.sources()] == ["pve", "turnkey"]
    assert not TemplateSource.objects.filter(node=node, source_id="gone").exists()


@pytest.mark.parametrize(
    "body, field",
    [
        ({"id": "x", "type": "aplinfo", "url": "file:///etc/passwd"}, "url"),
        ({"id": "x", "type": "aplinfo", "url": "http://169.254.169.254/latest"}, "url"),
        ({"id": "x", "type": "apt", "url": "http://127.0.0.1/"}, "type"),
        ({"id": "../x", "type": "aplinfo", "url": "http://127.0.0.1/"}, "id"),
        ({"id": "x", "type": "aplinfo"}, "url"),
        ({"id": "x", "type": "aplinfo", "url": "http://127.0.0.1/", "keyring": "/etc/shadow"}, "keyring"),
    ],
)
def test_bad_sources_are_refused_by_field(node, make_user, body, field):
    admin = client_for(make_user("admin", superuser=True))
    answer = admin.post(f"/api/nodes/{node.name}/template-sources/", body, format="json")
    assert answer.status_code == 400 and field in error_of(answer)["fields"], answer.content
    assert not Job.objects.filter(kind="tmplsources").exists()


def test_only_an_administrator_changes_sources(node, make_user, roles):
    auditor = client_for(make_user("auditor", "Auditor", "/"))
    base = f"/api/nodes/{node.name}/template-sources/"
    assert auditor.get(base).status_code == 200
    answer = auditor.post(base, {"id": "x", "type": "aplinfo", "url": "http://127.0.0.1/a.dat"}, format="json")
    assert answer.status_code == 403 and "Sys.Modify" in error_of(answer)["message"]
    assert client_for(make_user("nobody")).get(base).status_code == 403
    page = auditor.get("/datacenter/template-sources/").content.decode()
    assert "Add a source" not in page
    assert not Job.objects.filter(kind="tmplsources").exists()
