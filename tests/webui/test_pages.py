"""The server-rendered console through Django's test client: pages, visibility, refusals, the wizard's checks."""

from __future__ import annotations

import time

import pytest
from django.core.cache import cache
from django.test import Client

from tests.webui.conftest import PASSWORD
from webui.models import AuditEntry, CatalogEntry, Container, Job, JobLine, MetricSample, StoredTemplate

TEMPLATE = "busybox-1.36.1-1_amd64.tar.zst"
FETCH = {"HTTP_X_REQUESTED_WITH": "fetch"}


@pytest.fixture(autouse=True)
def clean_cache():
    cache.clear()  # login throttling counters live in the (test) Redis cache
    yield
    cache.clear()


@pytest.fixture
def world(node):
    """Two containers, a stored template, a catalog entry, a job with a log, some metrics."""
    running = Container.objects.create(
        ctid=100,
        node=node,
        hostname="web",
        status="running",
        ipv4=["10.0.0.5"],
        config={
            "hostname": "web",
            "memory": "512",
            "swap": "512",
            "net0": "name=eth0,bridge=vmbr0,ip=10.0.0.5/24,gw=10.0.0.1",
        },
        digest="a" * 40,
        snapshots=[
            {"name": "fresh", "parent": None, "snaptime": 1_790_000_000, "description": "as created"},
            {"name": "current", "parent": "fresh"},
        ],
    )
    stopped = Container.objects.create(
        ctid=101,
        node=node,
        hostname="db",
        status="stopped",
        config={"hostname": "db", "memory": "256"},
        digest="b" * 40,
    )
    StoredTemplate.objects.create(node=node, name=TEMPLATE, size=1_000_000)
    CatalogEntry.objects.create(
        node=node,
        source="pve",
        section="system",
        name="debian-12-standard_amd64.tar.zst",
        os="debian",
        version="12",
        description="Debian 12 (standard)",
    )
    job = Job.objects.create(node=node, kind="vzstart", path="/ct/101", target="101", status="ok", message="OK")
    JobLine.objects.create(job=job, seq=1, text="starting vzstart 101")
    now = int(time.time())
    for scope in (f"node/{node.name}", "ct/100"):
        MetricSample.objects.create(
            scope=scope,
            step=10,
            ts=now - now % 10,
            cpu=0.5,
            memory=1 << 20,
            memory_total=1 << 30,
            disk_used=1 << 30,
            disk_total=1 << 33,
        )
    return {"node": node, "running": running, "stopped": stopped, "job": job}


def login(make_user, username="admin", role=None, path="/", superuser=False, csrf=False) -> Client:
    make_user(username, role, path, superuser=superuser)
    client = Client(enforce_csrf_checks=csrf)
    assert client.login(username=username, password=PASSWORD)
    return client


def test_every_page_renders_for_an_admin(make_user, world):
    client = login(make_user, superuser=True)
    node = world["node"].name
    pages = {
        "/": ["Datacenter", 'data-tree-ct="100"', 'data-tree-ct="101"', "chart-node-"],
        f"/nodes/{node}/": [f"Node {node}", 'data-chart="cpu"', 'data-chart="disk"'],
        "/ct/100/": ["Container 100", 'id="btn-start"', "10.0.0.5", 'data-chart="net"'],
        "/ct/100/console/": ['id="console-frame"', "/ct/100/console/term/"],
        "/ct/100/resources/": ['name="memory"', 'value="512"', "a" * 40],
        "/ct/100/network/": ["net0", "vmbr0", "10.0.0.1", "Add an interface"],
        "/ct/100/network/?edit=net0": ["Edit net0"],
        "/ct/100/options/": ['name="hostname"', 'value="web"', 'name="protection"'],
        "/ct/100/snapshots/": ["Take snapshot", "NOW", "fresh", "as created", "Rollback"],
        "/ct/100/backup/": ["Backups of CT 100", "Backup now"],
        "/ct/101/tasks/": ["vzstart 101"],
        "/create/": ["General", "Root disk", "Confirm", TEMPLATE, 'value="102"'],
        "/templates/": [f"local:vztmpl/{TEMPLATE}", "debian-12-standard_amd64.tar.zst", "Download"],
        f"/jobs/{world['job'].pk}/": ["starting vzstart 101"],
    }
    for url, texts in pages.items():
        response = client.get(url)
        assert response.status_code == 200, url
        body = response.content.decode()
        for text in texts:
            assert text in body, (url, text)
        assert 'id="task-rows"' in body and "live.js" in body
    log = client.get(f"/jobs/{world['job'].pk}/", HTTP_ACCEPT="application/json").json()
    assert log["job"]["status"] == "ok" and log["lines"][0]["text"] == "starting vzstart 101"


def test_buttons_follow_status_and_privileges(make_user, world):
    admin = login(make_user, superuser=True)
    body = admin.get("/ct/100/").content.decode()
    assert 'id="btn-start" data-when="stopped" data-allowed="1" disabled' in body
    assert 'id="btn-stop" data-when="running" data-allowed="1">' in body
    assert 'id="clone-form"' in body and 'name="newid"' in body
    auditor = login(make_user, "aud", "Auditor")
    body = auditor.get("/ct/101/").content.decode()
    assert 'id="btn-start" data-when="stopped" data-allowed="0" disabled' in body
    assert 'id="clone-form"' not in body and "you lack the privilege" in body
    assert "Take snapshot" not in auditor.get("/ct/101/snapshots/").content.decode()
    assert auditor.post("/ct/101/snapshot/snapshot", {"name": "s1"}).status_code == 403
    assert auditor.post("/ct/101/clone", {"newid": "555"}).status_code == 403


def test_snapshot_and_clone_forms_say_what_is_wrong(make_user, world):
    admin = login(make_user, superuser=True)
    response = admin.post("/ct/100/snapshot/snapshot", {"name": "has space"}, **FETCH)
    assert response.status_code == 400 and "name" in response.json()["error"]["fields"]
    response = admin.post("/ct/100/snapshot/rollback", {"name": "never-taken"}, **FETCH)
    assert response.status_code == 400 and "no snapshot 'never-taken'" in response.json()["error"]["message"]
    response = admin.post("/ct/100/clone", {"newid": "101"}, **FETCH)
    assert response.status_code == 400 and "already in use" in response.json()["error"]["message"]
    response = admin.post("/ct/100/clone", {"newid": "5000", "hostname": "bad name"}, **FETCH)
    assert response.status_code == 400 and "hostname" in response.json()["error"]["fields"]
    response = admin.post("/ct/100/snapshot/snapshot", {"name": "before-upgrade"}, **FETCH)
    assert response.status_code == 202 and response.json()["job"]["kind"] == "vzsnapshot"


def test_a_user_sees_only_granted_containers(make_user, world):
    client = login(make_user, "alice", "Operator", "/ct/100")
    body = client.get("/").content.decode()
    assert 'data-tree-ct="100"' in body and 'data-ct-row="100"' in body
    assert 'data-tree-ct="101"' not in body and "/ct/101/" not in body
    assert "vzstart 101" not in body  # the task panel hides jobs on containers the user may not see
    assert "Create CT" not in body
    assert client.get("/ct/100/").status_code == 200
    refused = client.get("/ct/101/")  # one the user may not see answers as one that does not exist
    assert refused.status_code == 404 and "CT 101 does not exist" in refused.content.decode()
    assert "Not found" in refused.content.decode() and 'class="tree"' in refused.content.decode()
    assert client.get(f"/nodes/{world['node'].name}/").status_code == 403
    assert client.get(f"/jobs/{world['job'].pk}/").status_code == 404


def test_forbidden_actions_are_refused_and_not_queued(make_user, world):
    auditor = login(make_user, "aud", "Auditor")
    response = auditor.post("/ct/101/power/start")
    assert response.status_code == 403 and "VM.PowerMgmt" in response.content.decode()
    assert auditor.post("/ct/101/power/start", **FETCH).status_code == 403
    assert auditor.post("/ct/101/destroy").status_code == 403
    assert auditor.post("/ct/100/config", {"keys": ["memory"], "memory": "1024"}).status_code == 403
    assert auditor.post(f"/templates/{world['node'].name}/download", {"name": "x.tar.zst"}).status_code == 403
    operator = login(make_user, "op", "Operator", "/ct/100")
    assert operator.post("/ct/101/power/start", **FETCH).status_code == 404  # not even visible to this user
    assert operator.post("/ct/100/destroy").status_code == 403
    assert operator.post("/create/submit", {"node": world["node"].name}).status_code == 403
    assert not Job.objects.exclude(pk=world["job"].pk).exists()
    assert AuditEntry.objects.filter(username="aud", outcome="denied", action="denied VM.PowerMgmt").exists()


def test_power_actions_queue_a_job_and_say_so(make_user, world):
    client = login(make_user, superuser=True)
    response = client.post("/ct/101/power/start", **FETCH)
    assert response.status_code == 202
    job = Job.objects.get(kind="vzstart", status="queued")
    assert response.json()["job"]["id"] == job.pk and job.path == "/ct/101"
    again = client.post("/ct/101/power/start", follow=True)  # a double click: refused with the reason
    assert "already queued" in again.content.decode()
    assert Job.objects.filter(kind="vzstart", status="queued").count() == 1
    refused = client.post("/ct/100/destroy", **FETCH)
    assert refused.status_code == 409 and "is running; stop it first" in refused.json()["error"]["message"]
    bad = client.post("/ct/100/power/explode", **FETCH)
    assert bad.status_code == 400 and "unknown action" in bad.json()["error"]["message"]


def test_csrf_less_posts_are_refused(make_user, world):
    client = login(make_user, superuser=True, csrf=True)
    assert client.post("/ct/101/power/start").status_code == 403
    assert client.post("/create/validate/general", {"hostname": "x"}).status_code == 403
    assert not Job.objects.filter(kind="vzstart", status="queued").exists()


def test_a_stale_page_acting_on_a_destroyed_container_is_told_so(make_user, world):
    client = login(make_user, superuser=True)
    response = client.post("/ct/4321/power/stop", follow=True)
    assert response.status_code == 200
    assert "CT 4321 no longer exists" in response.content.decode()
    response = client.post("/ct/4321/destroy", **FETCH)
    error = response.json()["error"]
    assert response.status_code == 404 and error["gone"] and "no longer exists" in error["message"]
    page = client.get("/ct/4321/")
    body = page.content.decode()
    assert page.status_code == 404 and "does not exist" in body and 'class="tree"' in body


def test_config_edits_queue_a_set_job_and_stale_edits_are_refused(make_user, world):
    client = login(make_user, superuser=True)
    response = client.post(
        "/ct/101/config",
        {
            "keys": ["cores", "memory", "swap"],
            "memory": "1024",
            "swap": "",
            "cores": "",
            "digest": "b" * 40,
            "tab": "resources",
        },
        **FETCH,
    )
    assert response.status_code == 202, response.content
    job = Job.objects.get(kind="vzset")
    assert job.params["changes"] == {"memory": "1024"} and job.params["digest"] == "b" * 40
    stale = client.post("/ct/100/config", {"keys": ["memory"], "memory": "1024", "digest": "c" * 40}, **FETCH)
    assert stale.status_code == 409 and "changed since it was read" in stale.json()["error"]["message"]
    bad = client.post("/ct/100/config", {"keys": ["memory"], "memory": "lots", "tab": "resources"}, follow=True)
    assert "memory" in bad.content.decode() and bad.redirect_chain[-1][0].endswith("/ct/100/resources/")
    nic = client.post(
        "/ct/100/config", {"slot": "net1", "name": "eth1", "bridge": "vmbr0", "ip": "300.1.1.1/24"}, **FETCH
    )
    assert nic.status_code == 400 and "net1" in nic.json()["error"]["fields"]
    removed = client.post("/ct/100/config", {"remove": "net0"}, **FETCH)
    assert removed.status_code == 202 and Job.objects.filter(kind="vzset", params__delete=["net0"]).exists()


GOOD = {
    "node": None,
    "ctid": "150",
    "hostname": "box",
    "password": "s3cret!",
    "password_confirm": "s3cret!",
    "unprivileged": "on",
    "template": f"local:vztmpl/{TEMPLATE}",
    "storage": "local",
    "disk_size": "4",
    "cpuunits": "100",
    "memory": "256",
    "swap": "0",
    "ipv4_mode": "dhcp",
    "ipv6_mode": "none",
    "start": "on",
}


def step(client, name, **changes):
    data = {**GOOD, "node": GOOD["node"], **changes}
    response = client.post(f"/create/validate/{name}", {k: v for k, v in data.items() if v is not None})
    return response.status_code, response.json().get("error", {}).get("fields", {})


def test_wizard_steps_say_exactly_what_is_wrong(make_user, world):
    client = login(make_user, superuser=True)
    GOOD["node"] = world["node"].name
    for name in ("general", "template", "disk", "cpu", "memory", "network", "dns", "confirm"):
        assert step(client, name) == (200, {}), name
    status, errors = step(client, "general", hostname="my host")
    assert status == 400 and list(errors) == ["hostname"]
    status, errors = step(client, "general", ctid="100")
    assert "ID 100 is already in use (the next free one is 102)" in errors["ctid"][0]
    status, errors = step(client, "general", password_confirm="other")
    assert errors == {"password_confirm": ["the passwords do not match"]}
    status, errors = step(client, "memory", memory="8")
    assert "greater than or equal to 16" in errors["memory"][0]
    status, errors = step(client, "template", template="local:vztmpl/gone-1.0_amd64.tar.zst")
    assert "is not in the store of node" in errors["template"][0]
    status, errors = step(client, "network", bridge="vmbr0", ipv4_mode="static", ipv4="10.0.0.300/24")
    assert status == 400 and list(errors) == ["ipv4"]
    status, errors = step(client, "network", bridge="vmbr0", ipv4_mode="static", ipv4="10.0.0.3/24", gw="10.0.0")
    assert status == 400 and list(errors) == ["gw"]
    status, errors = step(client, "dns", nameserver="dns.example")
    assert errors == {"nameserver": ["'dns.example' is not an IP address"]}


def test_wizard_summary_and_submit_land_on_the_new_container(make_user, world):
    client = login(make_user, superuser=True)
    GOOD["node"] = world["node"].name
    summary = client.post("/create/summary", GOOD).json()["summary"]
    assert ["Root disk", "local:4"] in summary and ["hostname", "box"] in summary
    StoredTemplate.objects.filter(name=TEMPLATE).delete()  # vanished between the Template step and Finish
    refused = client.post("/create/submit", GOOD, **FETCH)
    assert refused.status_code == 400 and refused.json()["error"]["step"] == "template"
    assert not Container.objects.filter(ctid=150).exists()
    StoredTemplate.objects.create(node=world["node"], name=TEMPLATE)
    response = client.post("/create/submit", GOOD)
    assert response.status_code == 302 and response["Location"] == "/ct/150/"
    job = Job.objects.get(kind="vzcreate")
    assert job.params["rootfs"] == "local:4" and job.params["start"] is True
    assert Container.objects.get(ctid=150).status == "creating"
    assert 'data-ct-status="150" id="ct-status">creating' in client.get("/ct/150/").content.decode()
    page = client.post("/create/submit", {**GOOD, "hostname": "bad name", "ctid": "151"})
    assert (
        page.status_code == 400
        and "bad name" in page.content.decode()
        and 'data-active="general"' in page.content.decode()
    )


def test_template_actions(make_user, world):
    client = login(make_user, superuser=True)
    node = world["node"].name
    response = client.post(f"/templates/{node}/download", {"name": "debian-12-standard_amd64.tar.zst"}, **FETCH)
    assert response.status_code == 202 and response.json()["job"]["kind"] == "download"
    page = client.get("/templates/").content.decode()
    assert '"kind": "download"' in page  # the running download drives its progress bar from the first paint
    job = Job.objects.get(kind="download")
    assert client.post(f"/jobs/{job.pk}/cancel", **FETCH).status_code == 202
    job.refresh_from_db()
    assert job.status == "cancelled"
    assert client.post(f"/templates/{node}/vzstart", {"name": "x"}).status_code == 404
    assert client.post(f"/templates/{node}/tmplremove", {"name": TEMPLATE}, **FETCH).status_code == 202


def test_the_pull_from_registry_form(make_user, world):
    client = login(make_user, superuser=True)
    node = world["node"].name
    page = client.get("/templates/").content.decode()
    assert 'id="oci-pull-form"' in page and f'data-tags-url="/api/nodes/{node}/templates/tags/"' in page
    assert "caisson/oci_pull.js" in page
    bad = client.post(f"/templates/{node}/ociregistrypull", {"reference": "Not A Ref"}, **FETCH)
    assert bad.status_code == 400 and "reference" in bad.content.decode()
    body = {"reference": "127.0.0.1:5000/team/app:1.0", "username": "u", "password": "never-in-clear"}
    response = client.post(f"/templates/{node}/ociregistrypull", body, **FETCH)
    assert response.status_code == 202 and response.json()["job"]["kind"] == "ociregistrypull"
    job = Job.objects.get(kind="ociregistrypull")
    assert job.target == "app_1.0.tar" and "never-in-clear" not in str(job.params)
    auditor = login(make_user, "aud", "Auditor")
    assert 'id="oci-pull-form"' not in auditor.get("/templates/").content.decode()
    assert auditor.post(f"/templates/{node}/ociregistrypull", body, **FETCH).status_code == 403


def test_build_from_the_catalog_takes_the_builder_and_options_of_its_offer(make_user, world):
    client = login(make_user, superuser=True)
    node = world["node"].name
    for name, params in (
        ("debian-trixie", {"builder": "debian", "suite": "trixie"}),
        ("busybox", {"builder": "busybox"}),
        ("alpine-3", {"builder": "alpine-3"}),
    ):
        response = client.post(f"/templates/{node}/tmplbuild", {"name": name}, **FETCH)
        assert response.status_code == 202, response.content
        job = Job.objects.get(pk=response.json()["job"]["id"])
        assert (job.kind, job.target, job.params) == ("tmplbuild", name, params)


def test_login_logout_and_throttling(make_user, settings):
    settings.LOGIN_FAILURE_LIMIT = 3
    make_user("carol", "Auditor")
    client = Client()
    assert client.get("/").status_code == 302
    assert "Log in" in client.get("/login/").content.decode()
    for _ in range(3):
        response = client.post("/login/", {"username": "carol", "password": "wrong"})
        assert (
            response.status_code == 200 and "Please enter a correct username and password" in response.content.decode()
        )
    response = client.post("/login/", {"username": "carol", "password": PASSWORD})
    assert response.status_code == 429 and "Too many failed logins" in response.content.decode()
    assert "_auth_user_id" not in client.session
    assert AuditEntry.objects.filter(username="carol", action="login", outcome="failed").count() == 3
    assert AuditEntry.objects.filter(username="carol", action="login", outcome="denied").count() == 1
    cache.clear()  # the window has passed
    response = client.post("/login/", {"username": "carol", "password": PASSWORD})
    assert response.status_code == 302 and AuditEntry.objects.filter(username="carol", outcome="ok").exists()
    assert client.post("/logout/").status_code == 302 and client.get("/").status_code == 302


def test_login_throttling_per_address(make_user, settings):
    settings.LOGIN_FAILURE_LIMIT = 2
    make_user("dave")
    client = Client(REMOTE_ADDR="192.0.2.7")
    for name in ("x1", "x2"):
        client.post("/login/", {"username": name, "password": "wrong"})
    response = client.post("/login/", {"username": "dave", "password": PASSWORD})
    assert response.status_code == 429
    other = Client(REMOTE_ADDR="192.0.2.8")
    assert other.post("/login/", {"username": "dave", "password": PASSWORD}).status_code == 302


def test_the_admin_lists_grants_and_keeps_built_in_roles_and_the_audit_log_read_only(make_user, world, roles):
    admin = login(make_user, superuser=True)
    for url in (
        "/admin/webui/accessentry/",
        "/admin/webui/role/",
        "/admin/webui/auditentry/",
        "/admin/webui/container/",
        "/admin/webui/apitoken/",
        "/admin/auth/user/",
    ):
        assert admin.get(url).status_code == 200, url
    builtin = roles["Administrator"]
    assert admin.post(f"/admin/webui/role/{builtin.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin.get("/admin/webui/auditentry/add/").status_code == 403
    assert admin.get("/admin/webui/container/add/").status_code == 403
