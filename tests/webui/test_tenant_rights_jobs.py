"""The node's own rights checks, through the real agent: what only the node can read (an archive's config,
a clone source's) is checked against what the user who asked may set, before anything is written."""

from __future__ import annotations

import secrets
import subprocess

import pytest
from rest_framework.test import APIClient

from tests.webui.conftest import wait_job
from webui.models import AccessEntry, BackupArchive, BackupSchedule, Container, Job, Role
from webui.models.queue import submit

pytestmark = pytest.mark.django_db(transaction=True)


def lines(job) -> str:
    return "\n".join(job.lines.values_list("text", flat=True))


def test_a_privileged_archive_restores_and_clones_only_for_a_superuser(
    agent, node, stored_busybox, ctid_factory, engine, make_user
):
    root = APIClient()
    root.force_authenticate(make_user("root", superuser=True))
    tenant_user = make_user("tenant", "ContainerAdmin", "/")  # everything a tenant gets, on every node and storage
    tenant = APIClient()
    tenant.force_authenticate(tenant_user)
    source, target, copy = ctid_factory(), ctid_factory(), ctid_factory()
    engine.create(source, stored_busybox, {"hostname": "priv", "unprivileged": "0"})
    Container.objects.create(
        ctid=source, node=node, status="stopped", hostname="priv", unprivileged=False, config={"unprivileged": "0"}
    )
    response = root.post(f"/api/containers/{source}/backups/", {"mode": "stop"}, format="json")
    assert response.status_code == 202, response.content
    job = wait_job(Job.objects.get(pk=response.json()["job"]["id"]))
    assert job.status == "ok", lines(job)
    archive = BackupArchive.objects.get(name=job.params["result"]["archive"])  # IDs are reused between tests

    # The web tier cannot read the archive's config: it queues the job, and the node refuses it.
    response = tenant.post(f"/api/backups/{archive.pk}/restore/", {"ctid": target}, format="json")
    assert response.status_code == 202, response.content
    job = wait_job(Job.objects.get(pk=response.json()["job"]["id"]))
    assert job.status == "error" and "unprivileged" in job.message and "superuser" in job.message, lines(job)
    assert not engine.exists(target) and not Container.objects.filter(ctid=target).exists()
    assert not (engine.layout.root / "images" / str(target)).exists()

    # The clone job checks its source's config itself (here queued without the web tier's check).
    job = wait_job(
        submit(
            "vzclone",
            node,
            f"/ct/{source}",
            str(source),
            user=tenant_user,
            params={"newid": copy, "snapshot": None, "full": True, "storage": None, "hostname": None},
        )
    )
    assert job.status == "error" and "unprivileged" in job.message, lines(job)
    assert not engine.exists(copy)

    # The same archive restores for a superuser: the check is what refused.
    response = root.post(f"/api/backups/{archive.pk}/restore/", {"ctid": target}, format="json")
    job = wait_job(Job.objects.get(pk=response.json()["job"]["id"]), timeout=120)
    assert job.status == "ok", lines(job)
    assert engine.exists(target) and not engine.status(target, stats=False).unprivileged

    # Destroying it takes its grants and its place in backup jobs along (the archives keep their own checks).
    AccessEntry.objects.create(user=tenant_user, role=Role.objects.get(name="Operator"), path=f"/ct/{target}")
    schedule = BackupSchedule.objects.create(schedule="daily", selection="include", ctids=[source, target])
    response = root.delete(f"/api/containers/{target}/")
    job = wait_job(Job.objects.get(pk=response.json()["job"]["id"]))
    assert job.status == "ok", lines(job)
    assert not Container.objects.filter(ctid=target).exists()
    assert not AccessEntry.objects.filter(path=f"/ct/{target}").exists()
    schedule.refresh_from_db()
    assert schedule.ctids == [source]
    (engine.layout.root / "dump" / archive.name).unlink()


def test_restore_and_clone_apply_the_nic_rules_on_the_node(
    agent, node, stored_busybox, ctid_factory, engine, make_user
):
    """The archive's (or the clone source's) NICs against webui.nic_rights, with the rights the user holds when
    the job runs; a superuser passes, and a bridge this node lacks is only a warning of the node's check."""
    bridge = f"cnr{secrets.token_hex(3)}"  # a host bridge of this test's: neither managed nor allowed at first
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    try:
        _nic_rules(node, stored_busybox, ctid_factory, engine, make_user, bridge)
    finally:
        subprocess.run(["ip", "link", "del", bridge], check=False, capture_output=True)


def _nic_rules(node, stored_busybox, ctid_factory, engine, make_user, bridge):
    root = APIClient()
    root.force_authenticate(make_user("root", superuser=True))
    tenant_user = make_user("tenant", "ContainerAdmin", "/")
    tenant = APIClient()
    tenant.force_authenticate(tenant_user)
    source, target, copy = ctid_factory(), ctid_factory(), ctid_factory()
    net0 = f"name=eth0,bridge={bridge},ip=dhcp"  # the firewall off
    engine.create(source, stored_busybox, {"hostname": "nics", "net0": net0})
    Container.objects.create(ctid=source, node=node, status="stopped", hostname="nics", config={"net0": net0})
    response = root.post(f"/api/containers/{source}/backups/", {"mode": "stop"}, format="json")
    job = wait_job(Job.objects.get(pk=response.json()["job"]["id"]))
    assert job.status == "ok", lines(job)
    archive = BackupArchive.objects.get(name=job.params["result"]["archive"])

    def restore(client, unique=False):
        response = client.post(f"/api/backups/{archive.pk}/restore/", {"ctid": target, "unique": unique}, format="json")
        assert response.status_code == 202, response.content
        return wait_job(Job.objects.get(pk=response.json()["job"]["id"]), timeout=120)

    def clone(user):
        return wait_job(
            submit(
                "vzclone",
                node,
                f"/ct/{source}",
                str(source),
                user=user,
                params={"newid": copy, "snapshot": None, "full": True, "storage": None, "hostname": None},
            ),
            timeout=120,
        )

    def remove(ctid):
        if engine.exists(ctid):
            engine.destroy(ctid, force=True)
        Container.objects.filter(ctid=ctid).delete()

    def nothing_left(ctid):
        assert not engine.exists(ctid) and not Container.objects.filter(ctid=ctid).exists()
        assert not (engine.layout.root / "images" / str(ctid)).exists()

    # A bridge neither managed nor allowed on this node: refused, naming the key and the bridge.
    for job, ctid in ((restore(tenant), target), (clone(tenant_user), copy)):
        assert job.status == "error" and "net0" in job.message and "nor allowed" in job.message, lines(job)
        nothing_left(ctid)

    # Allowed now; the firewall is off and (without unique) the archive keeps the source's MAC.
    node.allowed_bridges = [bridge]
    node.save(update_fields=["allowed_bridges"])
    job = restore(tenant)
    assert job.status == "error" and "VM.Config.Network" in job.message, lines(job)
    assert "net0: the firewall off" in job.message and "MAC" in job.message, job.message
    nothing_left(target)
    job = clone(tenant_user)  # a clone gets a new MAC: only the firewall is asked about
    assert job.status == "error" and "net0: the firewall off" in job.message and "MAC" not in job.message, lines(job)
    nothing_left(copy)

    # Granted now, with nothing queued again by the web tier: the node reads the rights as the job runs.
    AccessEntry.objects.create(user=tenant_user, role=Role.objects.get(name="Administrator"), path=node.path)
    job = clone(tenant_user)
    assert job.status == "ok", lines(job)
    remove(copy)

    # A superuser is not held to the node's allowed bridges; one the node lacks is a warning of this check
    # (whether the engine then restores it is the engine's matter).
    node.allowed_bridges = []
    node.save(update_fields=["allowed_bridges"])
    job = restore(root, unique=True)  # a fresh MAC: the source keeps its own
    assert job.status == "ok", lines(job)
    remove(target)
    subprocess.run(["ip", "link", "del", bridge], check=True)
    job = restore(root, unique=True)
    assert f"net0: bridge '{bridge}' does not exist on this node" in lines(job)
    assert "permission denied" not in job.message, job.message
    remove(target)
    (engine.layout.root / "dump" / archive.name).unlink()
