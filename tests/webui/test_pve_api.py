"""``/api2/json`` in-process: tickets, CSRF, API tokens with privilege separation, and bad input refused the
Proxmox way (status code, message, ``errors`` per parameter) with nothing changed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from tests.webui.api_helpers import fresh_throttles, template_row  # noqa: F401
from tests.webui.conftest import PASSWORD
from webui.models import AccessEntry, ApiToken, Container, Job

pytestmark = pytest.mark.django_db


def login(client: Client, userid: str, password: str = PASSWORD):
    return client.post("/api2/json/access/ticket", {"username": userid, "password": password})


@pytest.fixture
def ct(node):
    return Container.objects.create(
        ctid=150,
        node=node,
        status="stopped",
        hostname="web",
        config={"memory": "256", "hostname": "web"},
        digest="a" * 40,
    )


def signed_in(make_user, role="Administrator", path="/") -> tuple[Client, dict]:
    make_user("alice", role, path)
    client = Client()
    data = login(client, "alice@pve").json()["data"]
    client.cookies["PVEAuthCookie"] = data["ticket"]
    return client, data


def test_ticket_login_renewal_and_csrf(make_user, node):
    client, data = signed_in(make_user)
    assert data["username"] == "alice@pve" and data["ticket"].startswith("PVE:alice@pve:")
    assert data["cap"]["vms"]["VM.Allocate"] == 1
    assert client.get("/api2/json/version").json()["data"]["version"].startswith("8.")
    # A still-valid ticket is accepted as the password, and gives a new one.
    renewed = login(Client(), "alice@pve", data["ticket"]).json()["data"]
    assert renewed["username"] == "alice@pve" and renewed["CSRFPreventionToken"]
    # Another user's name with that ticket, a wrong password, no ticket at all: refused.
    make_user("bob")
    assert login(Client(), "bob@pve", data["ticket"]).status_code == 401
    wrong = login(Client(), "alice@pve", "nope")
    assert wrong.status_code == 401 and wrong.json() == {"data": None, "message": "authentication failure"}
    assert Client().get("/api2/json/nodes").status_code == 401
    # A change with the ticket but without the CSRF token is refused; with it, it passes the check.
    refused = client.post(f"/api2/json/nodes/{node.name}/lxc/150/status/start")
    assert refused.status_code == 401 and "csrf" in refused.json()["message"]


def test_unknown_parameter_wrong_type_and_missing_one(make_user, node, ct):
    client, data = signed_in(make_user)
    headers = {"HTTP_CSRFPREVENTIONTOKEN": data["CSRFPreventionToken"]}
    url = f"/api2/json/nodes/{node.name}/lxc/150/config"
    answer = client.put(url, "memory=abc&colour=red", content_type="application/x-www-form-urlencoded", **headers)
    assert answer.status_code == 400
    assert answer.json()["data"] is None
    assert answer.json()["errors"] == {
        "memory": "type check ('integer') failed - got 'abc'",
        "colour": "property is not defined in schema and the schema does not allow additional properties",
    }
    missing = client.post(f"/api2/json/nodes/{node.name}/lxc/150/snapshot", {}, **headers)
    assert missing.status_code == 400 and missing.json()["errors"] == {
        "snapname": "property is missing and it is not optional"
    }
    stale = client.put(
        url, f"memory=512&digest={'b' * 40}", content_type="application/x-www-form-urlencoded", **headers
    )
    assert stale.status_code == 500 and "detected modified configuration" in stale.json()["message"]
    assert not Job.objects.exists()
    ct.refresh_from_db()
    assert ct.config["memory"] == "256"


def test_unknown_node_and_vmid(make_user, node):
    client, _ = signed_in(make_user)
    gone = client.get(f"/api2/json/nodes/{node.name}/lxc/999/status/current")
    assert gone.status_code == 500
    assert gone.json()["message"] == f"Configuration file 'nodes/{node.name}/lxc/999.conf' does not exist"
    nowhere = client.get("/api2/json/nodes/nosuchnode/lxc")
    assert nowhere.status_code == 596 and nowhere.json()["message"] == "no such cluster node 'nosuchnode'"
    assert client.get("/api2/json/no/such/path").status_code == 501


def test_missing_privilege(make_user, node, ct):
    client, data = signed_in(make_user, "Auditor")
    headers = {"HTTP_CSRFPREVENTIONTOKEN": data["CSRFPreventionToken"]}
    answer = client.post(f"/api2/json/nodes/{node.name}/lxc/150/status/start", **headers)
    assert answer.status_code == 403
    assert answer.json() == {"data": None, "message": "Permission check failed (/vms/150, VM.PowerMgmt)"}
    assert not Job.objects.exists()


def test_api_token_privilege_separation(make_user, node, ct, roles):
    alice = make_user("alice", "Administrator", "/")
    token, value = ApiToken.issue(alice, "ci", privsep=True)
    user, secret = value.split("!")[0], value.split("=", 1)[1]
    header = {"HTTP_AUTHORIZATION": f"PVEAPIToken={user}@pve!ci={secret}"}
    client = Client()
    # A separated token with no grants of its own sees nothing and may do nothing.
    assert client.get("/api2/json/cluster/resources", {"type": "vm"}, **header).json()["data"] == []
    refused = client.post(f"/api2/json/nodes/{node.name}/lxc/150/status/start", **header)
    assert (
        refused.status_code == 403 and refused.json()["message"] == "Permission check failed (/vms/150, VM.PowerMgmt)"
    )
    # Granted the auditor role on the container, it sees it, still cannot start it; no CSRF token asked.
    AccessEntry.objects.create(token=token, role=roles["Auditor"], path="/ct/150")
    listed = client.get("/api2/json/cluster/resources", {"type": "vm"}, **header).json()["data"]
    assert [(r["vmid"], r["type"], r["name"]) for r in listed] == [(150, "lxc", "web")]
    assert client.post(f"/api2/json/nodes/{node.name}/lxc/150/status/start", **header).status_code == 403
    # A token never holds more than its user: Administrator for the token, Auditor for the user.
    bob = make_user("bob", "Auditor", "/")
    bob_token, bob_value = ApiToken.issue(bob, "wide", privsep=True)
    AccessEntry.objects.create(token=bob_token, role=roles["Administrator"], path="/")
    bob_header = {"HTTP_AUTHORIZATION": f"PVEAPIToken=bob@pve!wide={bob_value.split('=', 1)[1]}"}
    assert client.post(f"/api2/json/nodes/{node.name}/lxc/150/status/start", **bob_header).status_code == 403
    wrong = client.get("/api2/json/nodes", HTTP_AUTHORIZATION=f"PVEAPIToken={user}@pve!ci=wrong")
    assert wrong.status_code == 401
    assert not Job.objects.exists()


def test_upid_round_trip(make_user, node, ct):
    from webui.pve.upid import job_of

    job = Job.objects.create(node=node, kind="vzstart", path="/ct/150", target="150")
    assert job.upid.startswith(f"UPID:{node.name}:{job.pk:08X}:")
    assert job_of(job.upid) == job and job_of(job.upid, node.name) == job
    assert job_of(job.upid, "other") is None
    forged = job.upid.replace(":vzstart:", ":vzstop:")
    assert job_of(forged) is None
    client, _ = signed_in(make_user)
    status = client.get(f"/api2/json/nodes/{node.name}/tasks/{job.upid}/status").json()["data"]
    assert (status["upid"], status["status"], status["type"], status["id"]) == (job.upid, "running", "vzstart", "150")
    bad = client.get(f"/api2/json/nodes/{node.name}/tasks/{forged}/status")
    assert bad.status_code == 400


def test_extjs_format(make_user, node):
    client, _ = signed_in(make_user)
    answer = client.get("/api2/extjs/nodes/nosuchnode/lxc")
    assert answer.status_code == 200
    assert answer.json() == {"data": None, "success": 0, "message": "no such cluster node 'nosuchnode'", "status": 596}


def test_tokens_and_acl_through_the_api(make_user, node, ct):
    client, data = signed_in(make_user)
    headers = {"HTTP_CSRFPREVENTIONTOKEN": data["CSRFPreventionToken"]}
    made = client.post("/api2/json/access/users/alice@pve/token/ci", {"comment": "pipeline"}, **headers).json()["data"]
    assert made["full-tokenid"] == "alice@pve!ci" and made["info"]["privsep"] == 1
    token = ApiToken.objects.get(user__username="alice", name="ci")
    assert token.secret_hash == ApiToken.hash(made["value"]) and made["value"] not in token.secret_hash
    header = {"HTTP_AUTHORIZATION": f"PVEAPIToken=alice@pve!ci={made['value']}"}
    start = f"/api2/json/nodes/{node.name}/lxc/150/status/start"
    assert client.post(start, **header).status_code == 403
    grant = "path=/vms/150&roles=Operator&tokens=alice@pve!ci"
    form = "application/x-www-form-urlencoded"
    assert client.put("/api2/json/access/acl", grant, content_type=form, **headers).status_code == 200
    acl = client.get("/api2/json/access/acl").json()["data"]
    assert {"path": "/vms/150", "roleid": "Operator", "type": "token", "ugid": "alice@pve!ci", "propagate": 1} in acl
    started = Client().post(start, **header)
    assert started.status_code == 200 and started.json()["data"].startswith(f"UPID:{node.name}:")
    assert client.put("/api2/json/access/acl", grant + "&delete=1", content_type=form, **headers).status_code == 200
    assert Client().post(start, **header).status_code == 403
    # Someone without Permissions.Modify changes no ACL, nor another user's tokens.
    make_user("carol", "Operator", "/")
    carol = Client()
    carol_data = login(carol, "carol@pve").json()["data"]
    carol.cookies["PVEAuthCookie"] = carol_data["ticket"]
    carol_headers = {"HTTP_CSRFPREVENTIONTOKEN": carol_data["CSRFPreventionToken"]}
    assert carol.put("/api2/json/access/acl", grant, content_type=form, **carol_headers).status_code == 403
    assert carol.post("/api2/json/access/users/alice@pve/token/x", **carol_headers).status_code == 403
    assert not AccessEntry.objects.filter(token=token).exists()


def test_create_refusals_change_nothing(make_user, node, ct):
    client, data = signed_in(make_user)
    headers = {"HTTP_CSRFPREVENTIONTOKEN": data["CSRFPreventionToken"]}
    url = f"/api2/json/nodes/{node.name}/lxc"
    base = {"vmid": 151, "ostemplate": template_row(node).volid, "password": "s3cret!pw"}
    # Proxmox's default is a privileged container: root-equivalent, for superusers only here.
    privileged = client.post(url, base, **headers)
    assert privileged.status_code == 403 and privileged.json()["message"].startswith("Permission check failed (")
    missing = client.post(url, {**base, "unprivileged": 1, "ostemplate": "local:vztmpl/none.tar.zst"}, **headers)
    assert missing.status_code == 400 and "not in the store" in missing.json()["errors"]["template"]
    taken = client.get("/api2/json/cluster/nextid", {"vmid": 150})
    assert taken.status_code == 400 and taken.json()["errors"] == {"vmid": "VM 150 already exists"}
    restore = client.post(url, {**base, "ostemplate": "local:backup/x.tar.zst", "restore": 1, "memory": 64}, **headers)
    assert restore.status_code == 400 and set(restore.json()["errors"]) == {"memory"}
    assert not Job.objects.exists() and list(Container.objects.values_list("ctid", flat=True)) == [150]


def test_listings_in_proxmox_shapes(make_user, node, ct):
    client, _ = signed_in(make_user)
    assert {"subdir": "nodes"} in client.get("/api2/json").json()["data"]
    guests = client.get("/api2/json/cluster/resources", {"type": "vm"}).json()["data"]
    assert guests == [
        {
            "id": "lxc/150",
            "type": "lxc",
            "vmid": 150,
            "name": "web",
            "node": node.name,
            "status": "stopped",
            "template": 0,
            "cpu": 0,
            "maxmem": 256 << 20,
            "mem": 0,
            "maxswap": 512 << 20,
            "uptime": 0,
            "tags": "",
            "lock": "",
            "disk": 0,
            "maxdisk": 0,
        }
    ]
    assert [n["node"] for n in client.get("/api2/json/nodes").json()["data"]] == [node.name]
    # A running guest's uptime: the lists have the database compute it, the single guest's status reads the row.
    Container.objects.filter(ctid=150).update(status="running", started_at=timezone.now() - timedelta(seconds=300))
    listed = client.get("/api2/json/cluster/resources", {"type": "vm"}).json()["data"][0]
    on_node = client.get(f"/api2/json/nodes/{node.name}/lxc").json()["data"][0]
    current = client.get(f"/api2/json/nodes/{node.name}/lxc/150/status/current").json()["data"]
    for shown in (listed, on_node, current):
        assert shown["status"] == "running" and 299 <= shown["uptime"] < 400
    Container.objects.filter(ctid=150).update(status="stopped")
    local = client.get(f"/api2/json/nodes/{node.name}/storage/local/status").json()["data"]
    assert local["active"] == 1 and "backup" in local["content"]
    config = client.get(f"/api2/json/nodes/{node.name}/lxc/150/config").json()["data"]
    assert config == {"memory": 256, "hostname": "web", "digest": "a" * 40}
