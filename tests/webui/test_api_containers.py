"""The containers API: who sees and does what, every bad input, 202 jobs, pagination.

No node agent here: jobs are recorded and left queued (their messages are
sent only on commit, which these tests never reach).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from tests.webui.api_helpers import client_for, create_body, error_of, fresh_throttles  # noqa: F401
from webui.models import AccessEntry, AuditEntry, Container, Job, Node, Pool

pytestmark = pytest.mark.django_db


@pytest.fixture
def cts(node):
    """Three stopped containers; 102 is in pool 'web'."""
    web = Pool.objects.create(name="web")
    return {
        ctid: Container.objects.create(
            ctid=ctid,
            node=node,
            status="stopped",
            hostname=f"ct{ctid}",
            pool=web if ctid == 102 else None,
            config={"hostname": f"ct{ctid}", "memory": "512"},
            digest="d" * 40,
        )
        for ctid in (100, 101, 102)
    }


@pytest.fixture
def users(make_user, roles, cts):
    """The permission matrix's people."""
    admin = make_user("admin", "Administrator", "/")
    operator = make_user("operator", "Operator", "/ct/100")
    auditor = make_user("auditor", "Auditor", "/")
    revoked = make_user("revoked", "Auditor", "/")
    AccessEntry.objects.create(user=revoked, role=roles["NoAccess"], path="/ct/101")
    member = make_user("member")
    group = Group.objects.create(name="ops")
    member.groups.add(group)
    AccessEntry.objects.create(group=group, role=roles["ContainerAdmin"], path="/ct/101")
    pooled = make_user("pooled", "Operator", "/pool/web")
    nobody = make_user("nobody")
    return {u.username: u for u in (admin, operator, auditor, revoked, member, pooled, nobody)}


VISIBLE = {
    "admin": [100, 101, 102],
    "operator": [100],
    "auditor": [100, 101, 102],
    "revoked": [100, 102],
    "member": [101],
    "pooled": [102],
    "nobody": [],
}


@pytest.mark.parametrize("who", sorted(VISIBLE))
def test_list_and_detail_show_only_what_the_user_audits(users, node, who):
    client = client_for(users[who])
    listed = client.get("/api/containers/").json()
    assert [c["ctid"] for c in listed["results"]] == VISIBLE[who] and listed["count"] == len(VISIBLE[who])
    for ctid in (100, 101, 102):
        response = client.get(f"/api/containers/{ctid}/")
        assert response.status_code == (200 if ctid in VISIBLE[who] else 404)
    detail = client.get(f"/api/containers/{VISIBLE[who][0]}/").json() if VISIBLE[who] else None
    if detail:
        assert detail["config"]["memory"] == "512" and detail["node"] == node.name


# (user, ctid) -> may power it on: Operator and ContainerAdmin hold VM.PowerMgmt; Auditor does not.
POWER = {
    ("admin", 100): 202,
    ("operator", 100): 202,
    ("auditor", 100): 403,
    ("member", 101): 202,
    ("pooled", 102): 202,
    ("revoked", 101): 404,
    ("operator", 101): 404,
    ("nobody", 100): 404,
}


@pytest.mark.parametrize("who,ctid", sorted(POWER))
def test_power_matrix(users, who, ctid):
    response = client_for(users[who]).post(f"/api/containers/{ctid}/status/start/")
    assert response.status_code == POWER[(who, ctid)], response.content
    if response.status_code == 202:
        body = response.json()
        job = Job.objects.get(pk=body["job"]["id"])
        assert (job.kind, job.target, job.user.username) == ("vzstart", str(ctid), who)
        assert body["location"] == f"/api/jobs/{job.pk}/" == response["Location"]
    elif response.status_code == 403:
        assert "VM.PowerMgmt" in error_of(response)["message"]
        assert AuditEntry.objects.filter(username=who, outcome="denied", path=f"/ct/{ctid}").exists()


CONFIG = {
    ("admin", 100): 202,
    ("operator", 100): 403,
    ("member", 101): 202,
    ("pooled", 102): 403,
    ("auditor", 100): 403,
    ("nobody", 100): 404,
}


@pytest.mark.parametrize("who,ctid", sorted(CONFIG))
def test_config_matrix(users, who, ctid):
    client = client_for(users[who])
    read = client.get(f"/api/containers/{ctid}/config/")
    assert read.status_code == (404 if CONFIG[(who, ctid)] == 404 else 200)
    if read.status_code == 200:
        assert read.json() == {"ctid": ctid, "digest": "d" * 40, "config": {"hostname": f"ct{ctid}", "memory": "512"}}
    response = client.put(
        f"/api/containers/{ctid}/config/", {"changes": {"memory": 1024}, "digest": "d" * 40}, format="json"
    )
    assert response.status_code == CONFIG[(who, ctid)], response.content
    if response.status_code == 202:
        job = Job.objects.get(pk=response.json()["job"]["id"])
        assert job.kind == "vzset" and job.params == {"changes": {"memory": "1024"}, "delete": [], "digest": "d" * 40}


DESTROY = {
    ("admin", 100): 202,
    ("operator", 100): 403,
    ("member", 101): 202,
    ("auditor", 102): 403,
    ("nobody", 101): 404,
}


@pytest.mark.parametrize("who,ctid", sorted(DESTROY))
def test_destroy_matrix(users, who, ctid):
    response = client_for(users[who]).delete(f"/api/containers/{ctid}/")
    assert response.status_code == DESTROY[(who, ctid)], response.content
    if response.status_code == 202:
        assert Job.objects.get(pk=response.json()["job"]["id"]).params == {"force": False}


@pytest.mark.parametrize("who,status", [("admin", 202), ("member", 403), ("operator", 403), ("nobody", 403)])
def test_create_matrix(users, node, who, status):
    response = client_for(users[who]).post("/api/containers/", create_body(node, 4100), format="json")
    assert response.status_code == status, response.content
    if status == 202:
        job = Job.objects.get(pk=response.json()["job"]["id"])
        assert job.kind == "vzcreate" and job.params["rootfs"] == "local:8" and job.params["start"] is False
        # Unprivileged by default; nesting only when asked, as Proxmox's API (the wizard ticks it for people)
        assert job.params["options"]["unprivileged"] == "1" and "features" not in job.params["options"]
        assert Container.objects.get(ctid=4100).status == "creating"
    else:
        assert not Container.objects.filter(ctid=4100).exists()


def test_create_carries_first_boot_provisioning_and_the_audit_only_its_size(users, node):
    from webui.models import AuditEntry

    script = "#!/bin/sh\necho hello > /root/hello\n"
    user_data = "#cloud-config\npassword: secret-in-user-data\n"
    body = create_body(node, 4101, firstboot=script, user_data=user_data)
    response = client_for(users["admin"]).post("/api/containers/", body, format="json")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["job"]["id"])
    assert job.params["provision"] == {"firstboot": script, "user_data": user_data}
    audit = " ".join(str(entry.__dict__) for entry in AuditEntry.objects.all())
    assert "secret-in-user-data" not in audit and f"{len(user_data)} bytes" in audit
    plain = client_for(users["admin"]).post("/api/containers/", create_body(node, 4102), format="json")
    assert Job.objects.get(pk=plain.json()["job"]["id"]).params["provision"] is None


def test_a_pool_grant_follows_the_container_into_and_out_of_the_pool(users, cts, node, make_user, roles):
    pooled = client_for(users["pooled"])
    assert pooled.get("/api/containers/100/").status_code == 404
    Container.objects.filter(ctid=100).update(pool=Pool.objects.get(name="web"))
    assert pooled.get("/api/containers/100/").status_code == 200
    assert pooled.post("/api/containers/100/status/stop/").status_code == 202


def test_moving_a_container_between_pools_needs_pool_allocate(users, cts, make_user):
    Pool.objects.create(name="db")
    keeper = make_user("keeper", "Administrator", "/pool/db")
    admin = client_for(users["admin"])
    assert admin.put("/api/containers/100/pool/", {"pool": "db"}, format="json").json()["pool"] == "db"
    assert (
        client_for(users["operator"]).put("/api/containers/100/pool/", {"pool": None}, format="json").status_code == 403
    )
    assert client_for(keeper).put("/api/containers/100/pool/", {"pool": None}, format="json").json()["pool"] is None
    bad = admin.put("/api/containers/100/pool/", {"pool": "nope"}, format="json")
    assert bad.status_code == 400 and "nope" in error_of(bad)["fields"]["pool"][0]
    assert admin.put("/api/containers/100/pool/", {"pool": 7}, format="json").status_code == 400


def test_list_filters_and_search(users, cts, node):
    other = Node.objects.create(name="other", last_seen=timezone.now())
    Container.objects.create(ctid=200, node=other, status="running", hostname="db-main")
    client = client_for(users["admin"])

    def ids(query):
        return [c["ctid"] for c in client.get(f"/api/containers/?{query}").json()["results"]]

    assert ids("node=other") == [200] and ids("status=running") == [200] and ids("pool=web") == [102]
    assert ids("search=db") == [200] and ids("search=10") == [100, 101, 102] and ids("search=ct101") == [101]


def test_a_list_row_shows_what_the_container_shows(users, cts, node):
    """The list builds its rows from plain values (node names and presence read once, address lists from
    their JSON text); each row must still say what the container's own page says."""
    gone = Node.objects.create(name="gone", last_seen=timezone.now() - timedelta(hours=1))
    Container.objects.filter(ctid=100).update(
        status="running", started_at=timezone.now() - timedelta(seconds=90), ipv4=["10.0.0.5", "10.1.0.5"]
    )
    Container.objects.filter(ctid=101).update(ipv6=["fd00::5"], cpu=0.25, memory_used=5 << 20)
    Container.objects.create(ctid=300, node=gone, status="running", hostname="far", started_at=timezone.now())
    client = client_for(users["admin"])
    rows = {row["ctid"]: row for row in client.get("/api/containers/").json()["results"]}
    assert set(rows) == {100, 101, 102, 300}
    uptimes = {ctid: row.pop("uptime") for ctid, row in rows.items()}  # read a moment apart: compared below
    for ctid, row in rows.items():
        detail = client.get(f"/api/containers/{ctid}/").json()
        assert row == {key: detail[key] for key in row}
        assert (uptimes[ctid] is None) == (detail["uptime"] is None)
    assert 89 < uptimes[100] < 600 and uptimes[300] is None and uptimes[101] is None
    assert rows[100]["ipv4"] == ["10.0.0.5", "10.1.0.5"] and rows[100]["status"] == "running"
    assert rows[101]["ipv6"] == ["fd00::5"] and rows[101]["ipv4"] == [] and rows[102]["pool"] == "web"
    assert rows[300]["status"] == "unknown" and rows[300]["node"] == "gone"


def test_pagination(users, node):
    Container.objects.bulk_create([Container(ctid=1000 + i, node=node, status="stopped") for i in range(25)])
    client = client_for(users["admin"])
    first = client.get("/api/containers/?limit=10").json()
    assert first["count"] == 28 and len(first["results"]) == 10 and first["previous"] is None
    assert "offset=10" in first["next"]
    last = client.get("/api/containers/?limit=10&offset=20").json()
    assert [c["ctid"] for c in last["results"]] == list(range(1017, 1025)) and last["next"] is None
    assert len(client.get("/api/containers/?limit=5000").json()["results"]) == 28  # capped at 1000, not refused


def test_next_id(users, node):
    assert client_for(users["admin"]).get("/api/containers/next-id/").json() == {"ctid": 103}


# ---- bad input ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes,field",
    [
        ({"memory": "lots"}, "memory"),
        ({"ctid": [1]}, "ctid"),
        ({"ctid": "100a"}, "ctid"),
        ({"unprivileged": "yes"}, "unprivileged"),
        ({"start": 1}, "start"),
        ({"memory": True}, "memory"),
        ({"hostname": 5}, "hostname"),
        ({"cores": 1.5}, "cores"),
        ({"memory": 8}, "memory"),
        ({"memory": 10**12}, "memory"),
        ({"ctid": 99}, "ctid"),
        ({"ctid": 10**10}, "ctid"),
        ({"disk_size": -1}, "disk_size"),
        ({"hostname": "my host"}, "hostname"),
        ({"tag": 4095}, "tag"),
        ({"password_confirm": "other"}, "password_confirm"),
        ({"node": "nowhere"}, "node"),
        ({"bogus": 1}, "bogus"),
        ({"nameserver": "not-an-ip"}, "nameserver"),
        ({"bridge": "vmbr0", "ipv4_mode": "static"}, "ipv4"),
        ({"template": "local:vztmpl/vanished.tar.zst"}, "template"),
        ({"firstboot": "echo no interpreter line"}, "firstboot"),
        ({"user_data": "packages: [htop]"}, "user_data"),
        ({"unprivileged": False, "nesting": True}, "nesting"),
    ],
)
def test_create_rejects_bad_input_with_field_errors(users, node, changes, field):
    response = client_for(users["admin"]).post("/api/containers/", create_body(node, 4200, **changes), format="json")
    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["status"] == 400 and field in error["fields"], error
    assert not Job.objects.exists() and not Container.objects.filter(ctid=4200).exists()


def test_create_rejects_an_id_in_use_and_a_body_that_is_not_an_object(users, node):
    client = client_for(users["admin"])
    error = error_of(client.post("/api/containers/", create_body(node, 100), format="json"))
    assert "already in use" in error["fields"]["ctid"][0] and "103" in error["fields"]["ctid"][0]
    assert client.post("/api/containers/", [1, 2], format="json").status_code == 400
    broken = client.post("/api/containers/", "{not json", content_type="application/json")
    assert broken.status_code == 400 and error_of(broken)["status"] == 400


def test_a_template_that_vanished_from_the_store(users, node):
    from webui.models import StoredTemplate

    body = create_body(node, 4300)
    StoredTemplate.objects.all().delete()
    error = error_of(client_for(users["admin"]).post("/api/containers/", body, format="json"))
    assert "not in the store" in error["fields"]["template"][0]


def test_an_offline_node(users, cts, node):
    Node.objects.filter(pk=node.pk).update(last_seen=timezone.now() - timedelta(minutes=5))
    client = client_for(users["admin"])
    response = client.post("/api/containers/100/status/start/")
    assert response.status_code == 503 and "offline" in error_of(response)["message"]
    created = client.post("/api/containers/", create_body(node, 4400), format="json")
    assert created.status_code == 400 and "offline" in error_of(created)["fields"]["node"][0]


def test_a_double_clicked_start_answers_409_with_the_existing_job(users, cts):
    client = client_for(users["operator"])
    first = client.post("/api/containers/100/status/start/")
    second = client.post("/api/containers/100/status/start/")
    assert (first.status_code, second.status_code) == (202, 409)
    error = error_of(second)
    assert error["job"] == first.json()["job"]["id"] and "already queued" in error["message"]
    assert Job.objects.filter(kind="vzstart").count() == 1


def test_power_inputs(users, cts):
    client = client_for(users["admin"])
    assert client.post("/api/containers/100/status/dance/").status_code == 404
    bad = client.post("/api/containers/100/status/shutdown/", {"timeout": "soon"}, format="json")
    assert bad.status_code == 400 and "timeout" in error_of(bad)["fields"]
    ok = client.post("/api/containers/100/status/shutdown/", {"timeout": 5}, format="json")
    assert ok.status_code == 202 and Job.objects.get(kind="vzshutdown").params == {"timeout": 5, "force_stop": True}
    Container.objects.filter(ctid=101).update(status="creating")
    assert client.post("/api/containers/101/status/start/").status_code == 409


def test_config_changes_are_checked(users, cts):
    client = client_for(users["admin"])

    def put(body):
        return client.put("/api/containers/100/config/", body, format="json")

    stale = put({"changes": {"memory": 1024}, "digest": "e" * 40})
    assert stale.status_code == 409 and "reload" in error_of(stale)["message"]
    assert "memory" in error_of(put({"changes": {"memory": "lots"}}))["fields"]
    assert "rootfs" in error_of(put({"changes": {"rootfs": "local:1"}}))["fields"]
    assert "changes" in error_of(put({"changes": ["memory"]}))["fields"]
    assert "delete" in error_of(put({"delete": "memory"}))["fields"]
    assert "delete" in error_of(put({"delete": [1]}))["fields"]
    assert "digest" in error_of(put({"changes": {"memory": 1024}, "digest": 5}))["fields"]
    assert "changes" in error_of(put({}))["fields"]
    assert put({"changes": {"memory": 1024}}).status_code == 202  # no digest: no check


def test_a_destroyed_container_is_404_and_a_running_one_needs_force(users, cts):
    client = client_for(users["admin"])
    Container.objects.filter(ctid=101).update(status="running")
    running = client.delete("/api/containers/101/")
    assert running.status_code == 409 and "running" in error_of(running)["message"]
    assert client.delete("/api/containers/101/?force=1").status_code == 202
    assert client.delete("/api/containers/100/?force=maybe").status_code == 400
    Container.objects.filter(ctid=100).delete()
    for response in (
        client.get("/api/containers/100/"),
        client.post("/api/containers/100/status/start/"),
        client.put("/api/containers/100/config/", {"changes": {"memory": 1}}, format="json"),
        client.delete("/api/containers/100/"),
    ):
        assert response.status_code == 404 and error_of(response)["status"] == 404


def test_metrics_as_arrays(users, cts, node):
    from webui.models import MetricSample

    MetricSample.objects.bulk_create(
        [MetricSample(scope="ct/100", step=10, ts=1000 + 10 * i, cpu=i / 10, memory=i << 20) for i in range(3)]
        + [MetricSample(scope="ct/100", step=300, ts=900, cpu=0.5)]
    )
    client = client_for(users["operator"])
    hour = client.get("/api/containers/100/metrics/").json()
    assert hour["timeframe"] == "hour" and hour["step"] == 10 and hour["ts"] == [1000, 1010, 1020]
    assert hour["cpu"] == [0.0, 0.1, 0.2] and hour["memory"] == [0, 1 << 20, 2 << 20]
    assert client.get("/api/containers/100/metrics/?timeframe=day").json()["cpu"] == [0.5]
    assert client.get("/api/containers/100/metrics/?timeframe=week").json()["ts"] == []
    assert client.get("/api/containers/100/metrics/?timeframe=decade").status_code == 400
    assert client.get("/api/containers/101/metrics/").status_code == 404
