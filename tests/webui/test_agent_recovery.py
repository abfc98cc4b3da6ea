"""The node agent killed in the middle of a job, then started again: recovery needs nobody.

A private agent (its own node name and queue) runs with the fault hook
(``CAISSON_FAULT_AT``), so the kill lands at a named step, not at a moment a
busy machine might miss; ``CAISSON_FAULT_GROUP=1`` kills the whole agent (its
main process and pool) as ``kill -9`` of the service would.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.webui.conftest import start_agent, stop_agent, wait_job
from tests.webui.test_backups_jobs import make_running
from webui.models import Job, Node
from webui.models.queue import submit

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _wait_dead(process, timeout: float = 60.0) -> None:
    try:
        process.wait(timeout)
    except Exception:  # noqa: BLE001 - reported below
        pytest.fail("the agent did not die at its fault point")


def _lines(job: Job) -> str:
    return "\n".join(job.lines.values_list("text", flat=True))


def test_agent_killed_mid_backup_recovers_at_its_next_start(
    services_env, tmp_path, node, stored_busybox, ctid_factory, engine
):
    name = f"fault-{os.getpid()}"
    process = start_agent(
        services_env, name, tmp_path / "agent.log", CAISSON_FAULT_AT="backup:first-pass", CAISSON_FAULT_GROUP="1"
    )
    try:
        victim = Node.objects.get(name=name)
        ctid = ctid_factory()
        rootfs = make_running(engine, victim, ctid, stored_busybox, "fault-victim")
        (rootfs / "root" / "data.bin").write_bytes(os.urandom(3 << 20))
        job = submit("vzdump", victim, f"/ct/{ctid}", str(ctid), params={"mode": "suspend"})
        _wait_dead(process)
    finally:
        stop_agent(process)
    dump = engine.layout.root / "dump"
    assert engine.config(ctid).current.values.get("lock") == "backup"  # as the kill left it
    assert list(dump.glob(f".tmp-{ctid}-*"))

    process = start_agent(services_env, name, tmp_path / "agent2.log")  # its start recovers
    try:
        job.refresh_from_db()
        assert job.status == "error" and "agent stopped" in job.message
        assert "recovered: container" in job.message and "a backup was interrupted" in job.message
        assert "recovery: " in _lines(job)
        assert "lock" not in engine.config(ctid).current.values
        assert not list(dump.glob(f".tmp-{ctid}-*")) and not list(dump.glob(f".vzdump-lxc-{ctid}-*"))
        assert engine.status(ctid).status == "running"
        again = wait_job(submit("vzdump", victim, f"/ct/{ctid}", str(ctid), params={"mode": "suspend"}))
        assert again.status == "ok", _lines(again)  # usable: the next backup needs no unlock
    finally:
        stop_agent(process)
        engine.stop(ctid)


def test_a_pool_process_killed_mid_backup_is_recovered_by_the_tick(
    services_env, tmp_path, node, stored_busybox, ctid_factory, engine
):
    """Only the job's pool process dies (the agent lives on): its next tick closes the job and recovers."""
    from tasks.celery import app

    name = f"fault-tick-{os.getpid()}"
    process = start_agent(services_env, name, tmp_path / "agent.log", CAISSON_FAULT_AT="backup:held")
    try:
        victim = Node.objects.get(name=name)
        ctid = ctid_factory()
        make_running(engine, victim, ctid, stored_busybox, "fault-tick")
        job = submit("vzdump", victim, f"/ct/{ctid}", str(ctid), params={"mode": "suspend"})
        deadline = time.monotonic() + 60
        while engine.config(ctid).current.values.get("lock") != "backup":
            assert time.monotonic() < deadline, "the backup never started"
            time.sleep(0.05)
        while True:  # the job's worker died at the fault point
            job.refresh_from_db()
            from tasks.base import worker_alive

            if job.worker and not worker_alive(job.worker):
                break
            assert time.monotonic() < deadline, "the job's worker did not die"
            time.sleep(0.05)
        while job.active or "recovered" not in job.message:
            app.send_task("caisson.node.tick", queue=victim.queue)
            time.sleep(0.5)
            job.refresh_from_db()
            assert time.monotonic() < deadline + 60, (job.status, job.message)
        assert job.status == "error" and "a backup was interrupted" in job.message
        assert "lock" not in engine.config(ctid).current.values
        assert engine.status(ctid).status == "running"
    finally:
        stop_agent(process)
        engine.stop(ctid)


def test_a_queued_job_whose_message_was_lost_is_sent_again(agent, node, engine, busybox_template, ctid_factory):
    """Redis restarted without its data (or a process died between the commit and the send): the job's row
    says queued, no message names it. The tick sends it again, and it runs once."""
    from datetime import timedelta

    from django.utils import timezone

    from tasks.celery import app
    from webui.models import Container

    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "lost-msg"})
    Container.objects.update_or_create(ctid=ctid, defaults={"node": node, "status": "stopped"})
    job = Job.objects.create(
        node=node,
        kind="vzstart",
        path=f"/ct/{ctid}",
        target=str(ctid),
        created=timezone.now() - timedelta(minutes=5),  # as if sent five minutes ago
    )
    app.send_task("caisson.node.tick", queue=node.queue)
    job = wait_job(job)
    assert job.status == "ok", job.message
    assert engine.status(ctid).status == "running"
    app.send_task("caisson.node.tick", queue=node.queue)  # again: the job is no longer queued, nothing is resent
    assert wait_job(job).status == "ok"
    engine.stop(ctid)


def test_the_agent_reaps_an_init_that_exits_on_its_own(agent, node, engine, busybox_template, ctid_factory):
    """A container started by a job, whose init then dies: no zombie stays under the agent (this host's PID 1
    does not reap), and the next tick clears what the container left."""
    from engine import procfs
    from tasks.celery import app
    from webui.models import Container

    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "reaped"})
    Container.objects.update_or_create(ctid=ctid, defaults={"node": node, "status": "stopped"})
    job = wait_job(submit("vzstart", node, f"/ct/{ctid}", str(ctid)))
    assert job.status == "ok", job.message
    record = engine.node.running(ctid)
    os.kill(record.pid, 9)
    deadline = time.monotonic() + 30
    while (stat := procfs.proc_stat(record.pid)) is not None and stat.starttime == record.starttime:
        assert time.monotonic() < deadline, f"init {record.pid} left as {stat.state}"
        time.sleep(0.05)
    app.send_task("caisson.node.tick", queue=node.queue)
    while engine.cgroups.exists(str(ctid)):  # the tick's recovery cleans up after it
        assert time.monotonic() < deadline + 30, "the cgroup stayed"
        time.sleep(0.1)
    assert engine.status(ctid, stats=False).status == "stopped"
