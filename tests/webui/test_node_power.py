"""startall and stopall as jobs: who may queue them (Proxmox's rules, a node's containers inheriting from it),
their inputs, the log line per container, a failure named; the agent's once-per-boot startall."""

from __future__ import annotations

import pytest

from tests.webui.api_helpers import client_for, error_of, fresh_throttles  # noqa: F401
from tests.webui.conftest import wait_job
from webui.models import AccessEntry, Container, Job
from webui.models.queue import submit


@pytest.fixture
def rows(node):
    return {
        ctid: Container.objects.create(ctid=ctid, node=node, status="stopped", hostname=f"ct{ctid}")
        for ctid in (100, 101)
    }


def post(user, node, kind, body=None):
    return client_for(user).post(f"/api/nodes/{node.name}/{kind}/", body or {}, format="json")


@pytest.mark.django_db
def test_who_may_queue_startall_and_stopall(make_user, roles, node, rows):
    admin = make_user("admin", "Administrator", "/")
    one = make_user("one", "Operator", "/ct/100")  # VM.PowerMgmt on one container only
    node_op = make_user("nodeop", "Operator", node.path)
    AccessEntry.objects.create(user=node_op, role=roles["NoAccess"], path="/ct/101")
    auditor = make_user("auditor", "Auditor", "/")

    assert post(one, node, "startall").status_code == 403  # the whole node needs it on the node
    answer = post(one, node, "stopall", {"vms": [100]})  # the containers named: on each of them
    assert answer.status_code == 202, answer.json()
    assert answer.json()["job"]["kind"] == "stopall" and answer.json()["job"]["path"] == node.path
    assert answer.json()["job"]["upid"].split(":")[5:8] == ["stopall", "", "one@pve"]
    assert post(one, node, "startall", {"vms": "100,101"}).status_code == 403  # Proxmox's string form, 101 not his

    refused = post(node_op, node, "startall")  # on the node, but 101 was taken away from this user
    assert refused.status_code == 403 and "CT 101" in error_of(refused)["message"]
    assert post(node_op, node, "startall", {"vms": [100]}).status_code == 202
    assert post(auditor, node, "startall", {"vms": [100]}).status_code == 403

    Job.objects.update(status=Job.Status.OK)  # those ended
    answer = post(admin, node, "startall", {"force": True})
    assert answer.status_code == 202
    job = Job.objects.get(pk=answer.json()["job"]["id"])
    assert (job.kind, job.target, job.params, job.user) == ("startall", "", {"force": True}, admin)
    again = post(admin, node, "startall")  # one startall of a node at a time
    assert again.status_code == 409 and error_of(again)["job"] == job.pk


@pytest.mark.django_db
@pytest.mark.parametrize(
    "kind, body, field",
    [
        ("startall", {"vms": ["abc"]}, "vms"),
        ("startall", {"vms": 100}, "vms"),
        ("startall", {"vms": [999]}, "vms"),  # not on this node
        ("startall", {"force": "yes"}, "force"),
        ("startall", {"timeout": 5}, "timeout"),  # a stopall key
        ("stopall", {"timeout": -1}, "timeout"),
        ("stopall", {"timeout": 7201}, "timeout"),
        ("stopall", {"force_stop": 1}, "force_stop"),
        ("stopall", {"bogus": 1}, "bogus"),
    ],
)
def test_bad_input_is_refused_by_name(make_user, node, rows, kind, body, field):
    admin = make_user("admin", "Administrator", "/")
    answer = post(admin, node, kind, body)
    assert answer.status_code == 400 and field in error_of(answer)["fields"], answer.json()
    assert not Job.objects.filter(kind=kind).exists()


@pytest.mark.django_db
def test_the_node_page_offers_the_buttons_to_those_who_may(make_user, node, rows):
    from django.test import Client

    admin, auditor = make_user("admin", "Administrator", "/"), make_user("auditor", "Auditor", "/")
    for user, shown in ((admin, True), (auditor, False)):
        client = Client()
        client.force_login(user)
        page = client.get(f"/nodes/{node.name}/").content.decode()
        assert ('id="node-startall"' in page) is shown and ('id="node-stopall"' in page) is shown
    client = Client()
    client.force_login(admin)
    answer = client.post(f"/nodes/{node.name}/stopall", HTTP_X_REQUESTED_WITH="fetch")
    assert answer.status_code == 202 and answer.json()["job"]["kind"] == "stopall"
    client.force_login(auditor)
    assert client.post(f"/nodes/{node.name}/startall", HTTP_X_REQUESTED_WITH="fetch").status_code == 403


@pytest.mark.django_db(transaction=True)
def test_startall_and_stopall_jobs_log_each_container_in_order(
    agent, node, engine, busybox_template, ctid_factory, make_user
):
    def make(**config):
        ctid = ctid_factory()
        engine.create(ctid, busybox_template, {"hostname": f"p{ctid}", "memory": "64", "swap": "0", **config})
        Container.objects.create(ctid=ctid, node=node, status="stopped")  # as the agent's mirror finds it
        return ctid

    second = make(onboot="1", startup="order=2")
    first = make(onboot="1", startup="order=1,up=1")
    manual = make()
    admin = make_user("admin", "Administrator", "/")
    job = wait_job(
        Job.objects.get(pk=post(admin, node, "startall", {"vms": [second, first, manual]}).json()["job"]["id"])
    )
    lines = list(job.lines.values_list("text", flat=True))
    assert job.status == "ok", lines
    assert lines[1:4] == [f"CT {first}: started", "waiting 1 s (startup delay)", f"CT {second}: started"], lines
    assert job.message == "2 container(s) started"
    assert {c: engine.status(c, stats=False).status for c in (first, second, manual)} == {
        first: "running",
        second: "running",
        manual: "stopped",
    }
    assert Container.objects.get(ctid=first).status == "running"  # mirrored at the end of the job

    job = wait_job(
        Job.objects.get(pk=post(admin, node, "stopall", {"vms": [first, second], "timeout": 5}).json()["job"]["id"])
    )
    lines = list(job.lines.values_list("text", flat=True))
    assert job.status == "ok" and lines[1:3] == [f"CT {second}: stopped", f"CT {first}: stopped"], lines

    path = engine.layout.config_path(first)
    path.write_text(path.read_text() + "lock: snapshot\n")  # its start is refused; the other still starts
    job = wait_job(Job.objects.get(pk=post(admin, node, "startall", {"vms": [first, second]}).json()["job"]["id"]))
    assert job.status == "error" and job.message.startswith(f"start failed for CT {first} "), job.message
    assert engine.status(second, stats=False).status == "running"
    engine.unlock(first)
    engine.stop(second)

    path.write_text(path.read_text() + "lock: backup\n")  # a backup the power loss cut short
    job = wait_job(submit("startall", node, node.path, "", params={"boot": True, "vms": [first]}))
    assert job.status == "ok" and f"warning: removed the left-over backup lock of CT {first}" in job.lines.values_list(
        "text", flat=True
    ), job.message
    assert engine.status(first, stats=False).status == "running" and not engine.config(first).get("lock")
    engine.stop(first)


@pytest.mark.django_db
def test_the_agent_queues_startall_once_per_host_boot(node, engine):
    from tasks import boot

    marker = engine.layout.run / boot.MARKER
    marker.unlink(missing_ok=True)  # the run directory of a host that just booted
    job = boot.queue_boot_startall(node, engine.layout.run)
    assert (job.kind, job.params, job.user) == ("startall", {"boot": True}, None)
    assert job.upid.split(":")[7] == "root@pam"
    assert marker.read_text().strip() == boot.current_boot_id()
    assert boot.queue_boot_startall(node, engine.layout.run) is None  # the agent restarted: same boot, nothing queued
    marker.write_text("another-boot\n")  # a run directory that survived a reboot (not a tmpfs)
    Job.objects.filter(pk=job.pk).update(status=Job.Status.OK)
    assert boot.queue_boot_startall(node, engine.layout.run).kind == "startall"
