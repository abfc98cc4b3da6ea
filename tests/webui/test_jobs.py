"""Jobs end to end: queued by the web tier, run by the real node agent through the engine, mirrored back."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.webui.conftest import wait_job
from webui.models import AuditEntry, Container, Job, Node
from webui.models.queue import JobRefused, cancel, submit

pytestmark = pytest.mark.django_db(transaction=True)


def create(node, ctid, template, user=None, **params):
    Container.objects.create(ctid=ctid, node=node, status=Container.Status.CREATING)
    return submit(
        "vzcreate",
        node,
        f"/ct/{ctid}",
        str(ctid),
        user=user,
        params={"template": template, "options": {"hostname": f"web{ctid}"}, **params},
    )


def test_create_start_stop_destroy_through_the_agent(agent, node, stored_busybox, ctid_factory, engine, make_user):
    admin = make_user("root-admin", superuser=True)
    ctid = ctid_factory()
    job = wait_job(create(node, ctid, stored_busybox, user=admin, password="s3cret!", start=True))
    assert (job.status, job.message) == ("ok", "OK"), list(job.lines.values_list("text", flat=True))
    texts = list(job.lines.order_by("seq").values_list("text", flat=True))
    assert texts[0] == f"starting vzcreate {ctid}" and texts[-1] == "TASK OK"
    assert job.upid.startswith(f"UPID:{node.name}:") and f":vzcreate:{ctid}:root-admin@pve:" in job.upid
    row = Container.objects.get(ctid=ctid)
    assert (row.status, row.hostname, row.init) == ("running", f"web{ctid}", "busybox")
    assert engine.status(ctid).status == "running"
    shadow = (engine._rootfs(engine.config(ctid)) / "etc" / "shadow").read_text()
    assert shadow.startswith("root:$6$")

    job = wait_job(submit("vzstop", node, f"/ct/{ctid}", str(ctid), user=admin))
    assert job.status == "ok"
    assert Container.objects.get(ctid=ctid).status == "stopped" and engine.status(ctid).status == "stopped"

    job = wait_job(submit("vzdestroy", node, f"/ct/{ctid}", str(ctid), user=admin))
    assert job.status == "ok" and not engine.exists(ctid)
    assert not Container.objects.filter(ctid=ctid).exists()
    assert AuditEntry.objects.filter(username="root-admin", action="vzdestroy", path=f"/ct/{ctid}").exists()


def test_a_create_job_provisions_a_first_boot_script_that_runs_once(agent, node, stored_busybox, ctid_factory, engine):
    ctid = ctid_factory()
    script = "#!/bin/sh\necho once >> /root/firstboot\n"
    job = wait_job(create(node, ctid, stored_busybox, start=True, provision={"firstboot": script}))
    assert job.status == "ok", list(job.lines.values_list("text", flat=True))
    assert any("first-boot provisioning (firstboot)" in t for t in job.lines.values_list("text", flat=True))
    for _ in range(200):
        code, out, _ = engine.exec_output(ctid, ["cat", "/root/firstboot"])
        if code == 0:
            break
        time.sleep(0.05)
    assert out == b"once\n"
    wait_job(submit("vzreboot", node, f"/ct/{ctid}", str(ctid)))
    assert engine.exec_output(ctid, ["cat", "/root/firstboot"])[1] == b"once\n"


def test_a_failed_create_says_why_and_leaves_nothing(agent, node, ctid_factory, engine):
    ctid = ctid_factory()
    job = wait_job(create(node, ctid, "local:vztmpl/vanished-1.0_amd64.tar.zst"))
    assert job.status == "error" and "does not exist" in job.message
    assert "TASK " + job.message in job.lines.values_list("text", flat=True)
    assert not engine.exists(ctid) and not Container.objects.filter(ctid=ctid).exists()


def test_a_bad_password_fails_the_create_and_removes_the_container(agent, node, stored_busybox, ctid_factory, engine):
    ctid = ctid_factory()
    job = wait_job(create(node, ctid, stored_busybox, password_hash="$6$not-a-hash"))
    assert job.status == "error" and "password-hash" in job.message
    assert not engine.exists(ctid) and not Container.objects.filter(ctid=ctid).exists()


def test_a_double_clicked_start_queues_one_job(node):
    Container.objects.create(ctid=4242, node=node, status="stopped")
    first = Job.objects.create(node=node, kind="vzstart", path="/ct/4242", target="4242")
    with pytest.raises(JobRefused, match="already queued") as refused:
        submit("vzstart", node, "/ct/4242", "4242")
    assert refused.value.job == first and Job.objects.filter(kind="vzstart").count() == 1


def test_an_offline_node_refuses_jobs(node):
    Node.objects.filter(pk=node.pk).update(last_seen=timezone.now() - timedelta(minutes=5))
    node.refresh_from_db()
    with pytest.raises(JobRefused, match="offline") as refused:
        submit("vzstart", node, "/ct/100", "100")
    assert refused.value.status == 503 and not Job.objects.exists()


def test_cancel_a_queued_job(node):
    job = Job.objects.create(node=node, kind="download", path=node.path, target="x.tar.zst")
    cancel(job)
    job.refresh_from_db()
    assert (job.status, job.cancel_requested) == ("cancelled", True)
    with pytest.raises(JobRefused, match="already ended"):
        cancel(job)


def test_jobs_on_one_container_run_in_order(agent, node, stored_busybox, ctid_factory):
    ctid = ctid_factory()
    created = create(node, ctid, stored_busybox)
    started = submit("vzstart", node, f"/ct/{ctid}", str(ctid))  # queued while the create runs
    assert wait_job(created).status == "ok"
    started = wait_job(started)
    assert started.status == "ok", started.message
    assert started.started >= created.ended
    wait_job(submit("vzstop", node, f"/ct/{ctid}", str(ctid)))


def test_a_busybox_build_job_reports_progress_and_fills_the_store(agent, node, engine):
    from webui.models import StoredTemplate

    job = wait_job(submit("tmplbuild", node, node.path, "busybox", params={"builder": "busybox"}))
    assert job.status == "ok", job.message
    assert job.progress == 1.0
    texts = list(job.lines.order_by("seq").values_list("text", flat=True))
    assert texts[1] == "build busybox" and texts[-2].startswith("stored as busybox-")
    name = texts[-2].removeprefix("stored as ")
    assert (engine.layout.templates / name).is_file()
    assert StoredTemplate.objects.filter(node=node, name=name).exists()


def test_an_unknown_builder_fails_with_the_choices(agent, node):
    job = wait_job(submit("tmplbuild", node, node.path, "nothing", params={"builder": "nothing"}))
    assert job.status == "error" and "busybox" in job.message and "debian" in job.message


def test_an_interrupted_create_shows_as_creating_and_can_be_destroyed(agent, node, engine, ctid_factory, make_user):
    from webui.access import Access
    from webui.actions import containers as actions

    ctid = ctid_factory()
    engine.layout.config_path(ctid).write_text("hostname: half\nlock: create\nunprivileged: 1\n")
    job = wait_job(submit("noderesync", node, node.path, node.name))
    assert job.status == "ok"
    row = Container.objects.get(ctid=ctid)
    assert row.status == "creating"
    admin = Access(make_user("cleaner", superuser=True))
    assert wait_job(actions.destroy(admin, row)).status == "ok"
    assert not engine.exists(ctid) and not Container.objects.filter(ctid=ctid).exists()


def test_engine_warnings_reach_the_jobs_own_log(agent, node, stored_busybox, ctid_factory, engine):
    """A create over what a killed create left: the engine cleans it up and says so in the job's log."""
    ctid = ctid_factory()
    engine.layout.config_path(ctid).write_text("hostname: half\nlock: create\nunprivileged: 1\n")
    job = wait_job(create(node, ctid, stored_busybox))
    assert job.status == "ok", job.message
    texts = list(job.lines.order_by("seq").values_list("text", flat=True))
    assert any(t.startswith("warning: ") and "was interrupted (lock: create)" in t for t in texts), texts


def test_a_job_delivered_again_runs_once(agent, node, ctid_factory):
    """The broker hands out a long job again after its visibility timeout: any job kind, not only backups.

    While the process that claimed it lives, the copy is ignored; once that process is gone, the job is
    marked failed instead of run a second time.
    """
    import os
    import socket
    import time

    from tasks.celery import app
    from webui.models.queue import TASKS

    def claimed(worker: str) -> Job:
        ctid = ctid_factory()
        return Job.objects.create(
            node=node,
            kind="vzstart",
            path=f"/ct/{ctid}",
            target=str(ctid),
            status=Job.Status.RUNNING,
            started=timezone.now(),
            worker=worker,
        )

    alive = claimed(f"{socket.gethostname()}:{os.getpid()}")  # this test process: alive
    dead = claimed(f"{socket.gethostname()}:{2**22 + 1}")  # above any pid_max: no such process
    for job in (alive, dead):
        app.send_task(TASKS["vzstart"], args=[job.pk], queue=node.queue)
    assert wait_job(dead).status == "error" and "agent stopped" in Job.objects.get(pk=dead.pk).message
    time.sleep(2)  # the other copy was taken at the same time; give it ample time to do anything
    alive.refresh_from_db()
    assert alive.status == Job.Status.RUNNING and not alive.lines.exists()
