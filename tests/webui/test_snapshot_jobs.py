"""Snapshots, rollback, clones and resize as jobs: validated by the web tier, run by the real agent."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from tests.webui.conftest import wait_job
from webui.access import Access
from webui.actions import containers as actions
from webui.models import Container

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def mirrored(agent, node, engine, busybox_template, ctid_factory, monkeypatch):
    """A stopped busybox container on the node, mirrored into the database."""
    import tasks.mirror
    from tasks.mirror import sync_container

    monkeypatch.setattr(tasks.mirror, "node_engine", lambda: engine)  # the agent's state root, read from here
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "snappy"})
    return sync_container(node, ctid)


def rootfs(engine, ctid):
    return engine._rootfs(engine.config(ctid))


def test_snapshot_rollback_delete_and_clone(mirrored, make_user, engine, ctid_factory):
    admin = Access(make_user("snapadmin", superuser=True))
    ct = mirrored
    (rootfs(engine, ct.ctid) / "marker").write_text("before")
    job = wait_job(actions.snapshot(admin, ct, "snapshot", "before", "first point"))
    assert job.status == "ok", job.message
    ct.refresh_from_db()
    assert [s["name"] for s in ct.snapshots] == ["before", "current"]
    assert ct.snapshots[0]["description"] == "first point"

    with pytest.raises(ValidationError, match="already has a snapshot"):
        actions.snapshot(admin, ct, "snapshot", "before")
    with pytest.raises(ValidationError, match="no snapshot 'missing'"):
        actions.snapshot(admin, ct, "rollback", "missing")
    with pytest.raises(ValidationError):
        actions.snapshot(admin, ct, "snapshot", "has space")

    (rootfs(engine, ct.ctid) / "marker").write_text("after")
    assert wait_job(actions.snapshot(admin, ct, "rollback", "before")).status == "ok"
    assert (rootfs(engine, ct.ctid) / "marker").read_text() == "before"

    newid = ctid_factory()
    job = wait_job(actions.clone(admin, ct, newid, hostname="snappy-copy"))
    assert job.status == "ok", job.message
    copy = Container.objects.get(ctid=newid)
    assert (copy.hostname, copy.status) == ("snappy-copy", "stopped")
    assert (rootfs(engine, newid) / "marker").read_text() == "before"
    with pytest.raises(ValidationError, match="already in use"):
        actions.clone(admin, ct, newid)

    assert wait_job(actions.snapshot(admin, ct, "delete", "before")).status == "ok"
    ct.refresh_from_db()
    assert [s["name"] for s in ct.snapshots] == ["pre-rollback-0", "current"]  # the rollback's safety snapshot


def test_a_failed_clone_frees_the_reserved_id(mirrored, make_user, ctid_factory):
    admin = Access(make_user("cloner", superuser=True))
    newid = ctid_factory()
    job = wait_job(actions.clone(admin, mirrored, newid, storage="no-such-storage"))
    assert job.status == "error" and "no-such-storage" in job.message
    assert not Container.objects.filter(ctid=newid).exists()


def test_snapshots_need_their_privilege(mirrored, make_user):
    operator = Access(make_user("op", "Operator", mirrored.path))
    with pytest.raises(PermissionDenied, match="VM.Snapshot"):
        actions.snapshot(operator, mirrored, "snapshot", "nope")
    with pytest.raises(PermissionDenied, match="VM.Clone"):
        actions.clone(operator, mirrored, 123456)


def test_resize_refuses_bad_input_an_unenforced_size_and_a_shrink(
    mirrored, make_user, node, engine, busybox_template, ctid_factory
):
    from tasks.mirror import sync_container

    admin = Access(make_user("resizer", superuser=True))
    with pytest.raises(ValidationError) as bad:
        actions.resize(admin, mirrored, "rootfs; rm", "lots")
    assert set(bad.value.message_dict) == {"disk", "size"}
    job = wait_job(actions.resize(admin, mirrored, "rootfs", "2G"))  # a directory volume: no size can hold it
    assert job.status == "error" and "cannot enforce a size" in job.message, job.message
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "sized", "rootfs": "local:0.0625"})  # a 64 MiB raw image
    sized = sync_container(node, ctid)
    assert wait_job(actions.resize(admin, sized, "rootfs", "128M")).status == "ok"
    job = wait_job(actions.resize(admin, sized, "rootfs", "64M"))
    assert job.status == "error" and "shrink" in job.message, job.message
