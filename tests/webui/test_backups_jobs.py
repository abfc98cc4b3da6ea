"""Backups end to end through the real node agent: back up a running container, restore it, verify, protect, delete."""

from __future__ import annotations

import os
import signal
import time

import pytest
from rest_framework.test import APIClient

from tests.webui.conftest import start_agent, stop_agent, wait_job
from webui.models import BackupArchive, Container, Job
from webui.models.queue import submit

pytestmark = pytest.mark.django_db(transaction=True)


def make_running(engine, node, ctid, template, hostname):
    engine.create(ctid, template, {"hostname": hostname})
    engine.start(ctid)
    Container.objects.update_or_create(ctid=ctid, defaults={"node": node, "status": "running", "hostname": hostname})
    return engine._rootfs(engine.config(ctid))


def answer_job(response) -> Job:
    assert response.status_code == 202, response.content
    return wait_job(Job.objects.get(pk=response.json()["job"]["id"]))


def test_back_up_a_running_container_and_restore_it_to_a_new_id(
    agent, node, stored_busybox, ctid_factory, engine, make_user
):
    api = APIClient()
    api.force_authenticate(make_user("bk-root", superuser=True))
    source, copy = ctid_factory(), ctid_factory()
    rootfs = make_running(engine, node, source, stored_busybox, "bk-source")
    (rootfs / "root" / "data.txt").write_text("kept across backup and restore\n")
    os.symlink("data.txt", rootfs / "root" / "link")

    job = answer_job(
        api.post(f"/api/containers/{source}/backups/", {"mode": "suspend", "notes": "first {{vmid}}"}, format="json")
    )
    assert job.status == "ok", "\n".join(job.lines.values_list("text", flat=True))
    assert engine.status(source).status == "running"
    archive = BackupArchive.objects.get(ctid=source, node=node)  # mirrored by the job, no disk read here
    assert archive.name == job.params["result"]["archive"] and archive.notes == f"first {source}"
    assert archive.size == job.params["result"]["size"] > 0 and job.progress == 1.0
    assert (engine.layout.root / "dump" / archive.name).is_file()

    listed = api.get(f"/api/containers/{source}/backups/").json()["results"]
    assert [a["volid"] for a in listed] == [f"local:backup/{archive.name}"]

    job = answer_job(api.post(f"/api/backups/{archive.pk}/verify/", {}, format="json"))
    assert job.status == "ok" and "readable end to end" in job.message, list(job.lines.values_list("text", flat=True))

    job = answer_job(
        api.post(f"/api/backups/{archive.pk}/restore/", {"ctid": copy, "hostname": "bk-copy"}, format="json")
    )
    assert job.status == "ok", "\n".join(job.lines.values_list("text", flat=True))
    restored = engine._rootfs(engine.config(copy))
    assert (restored / "root" / "data.txt").read_text() == "kept across backup and restore\n"
    assert os.readlink(restored / "root" / "link") == "data.txt"
    assert sorted(p.name for p in (restored / "bin").iterdir()) == sorted(p.name for p in (rootfs / "bin").iterdir())
    row = Container.objects.get(ctid=copy)
    assert (row.status, row.hostname) == ("stopped", "bk-copy")

    job = answer_job(api.post(f"/api/backups/{archive.pk}/protect/", {"protected": True}, format="json"))
    assert job.status == "ok"
    archive.refresh_from_db()
    assert archive.protected
    refused = api.delete(f"/api/backups/{archive.pk}/")
    assert refused.status_code == 409 and "protected" in refused.json()["error"]["message"]
    # Even queued directly, the node refuses to delete a protected backup.
    job = wait_job(
        submit(
            "vzbackupdelete", node, f"/ct/{source}", str(source), params={"storage": "local", "archive": archive.name}
        )
    )
    assert job.status == "error" and "protected" in job.message
    assert (engine.layout.root / "dump" / archive.name).is_file()

    answer_job(api.post(f"/api/backups/{archive.pk}/protect/", {"protected": False}, format="json"))
    job = answer_job(api.delete(f"/api/backups/{archive.pk}/"))
    assert job.status == "ok"
    assert not (engine.layout.root / "dump" / archive.name).exists()
    assert not BackupArchive.objects.filter(ctid=source).exists()


def test_a_worker_killed_mid_backup_leaves_no_archive_and_the_container_running(
    services_env, tmp_path, node, stored_busybox, ctid_factory, engine
):
    """A private agent (its own node name and queue) is killed while it archives a container it froze."""
    name = f"bk-kill-{os.getpid()}"
    process = start_agent(services_env, name, tmp_path / "agent.log")
    try:
        from webui.models import Node

        victim = Node.objects.get(name=name)
        ctid = ctid_factory()
        rootfs = make_running(engine, victim, ctid, stored_busybox, "bk-victim")
        with open(rootfs / "root" / "noise.bin", "wb") as out:  # slow to gzip: the kill lands mid-archive
            for _ in range(96):
                out.write(os.urandom(1 << 20))
        dump = engine.layout.root / "dump"
        job = submit("vzdump", victim, f"/ct/{ctid}", str(ctid), params={"mode": "suspend", "compress": "gzip"})
        deadline, polls = time.monotonic() + 60, 0
        while time.monotonic() < deadline:
            # The archive's temporary file is there: the copy is done and the archive is being written. Looked
            # for first and often (the database only now and then), so a busy machine does not miss the window.
            if list(dump.glob(f".vzdump-lxc-{ctid}-*.part")):
                break
            polls += 1
            if polls % 20 == 0:
                job.refresh_from_db()
                assert job.active, (job.status, job.message)
            time.sleep(0.01)
        else:
            pytest.fail("the backup never got under way")
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        stop_agent(process)

    from engine.backup import list_backups

    assert list(dump.glob(f".vzdump-lxc-{ctid}-*.part"))  # killed mid-archive: its temporary file is left ...
    assert [b.name for b in list_backups(dump, ctid)] == []  # ... and is never listed as a backup
    assert not BackupArchive.objects.filter(ctid=ctid).exists()
    deadline = time.monotonic() + 20
    while frozen(engine, ctid):  # the backup's guard, in its own session, thaws it when the backup dies
        assert time.monotonic() < deadline, "the guard did not thaw the container"
        time.sleep(0.1)
    assert engine.status(ctid).status == "running"
    assert engine.exec_output(ctid, ["echo", "alive"])[:2] == (0, b"alive\n")


def frozen(engine, ctid: int) -> bool:
    """The kernel's own word on the container's freezer (cgroup v2 ``cgroup.events``, v1 ``freezer.state``)."""
    driver = engine.cgroups
    if type(driver).__name__ == "V2Driver":
        from engine.cgroups.v2 import read_keyed

        return read_keyed(driver._path(str(ctid), "cgroup.events")).get("frozen") == 1
    with open(driver._need(str(ctid), "freezer", "freezer.state", "freeze")) as state:
        return state.read().strip() != "THAWED"
