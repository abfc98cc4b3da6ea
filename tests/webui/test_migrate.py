"""Migration through the jobs and the API: two real agents on this machine (each its own state root, run
directory, cgroup parent, node name and queue), their migration endpoints in network namespaces of their own
joined by a veth the test makes.  Offline and restart mode with data written before and checked after, the
row (ACLs, pool) following the container, and bad input and missing rights refused."""

from __future__ import annotations

import hashlib
import os
import shutil
import time

import pytest
from django.utils import timezone

from tests.engine.migrate_lab import veth_pair
from tests.webui.api_helpers import client_for
from tests.webui.conftest import start_agent, stop_agent, wait_job
from webui.models import AccessEntry, Container, FirewallFile, Job, Node, Pool


def _engine(base, parent):
    from engine.lifecycle import Engine

    return Engine(root=base / "state", run_dir=base / "run", cgroup_parent=parent)


@pytest.fixture
def two_nodes(services_env, cgroup_parent, tmp_path):
    """(engine, node row) of node-ma and node-mb, each with its agent; containers and cgroups removed after."""
    engines, agents = {}, []
    with veth_pair() as (ns_a, addr_a, ns_b, addr_b):
        try:
            for name, ns, addr in (("node-ma", ns_a, addr_a), ("node-mb", ns_b, addr_b)):
                base = tmp_path / name
                parent = f"{cgroup_parent}-{name}"
                engines[name] = _engine(base, parent)
                engines[name].layout.ensure()
                agents.append(
                    start_agent(
                        services_env,
                        name,
                        tmp_path / f"{name}.log",
                        CAISSON_ROOT=str(base / "state"),
                        CAISSON_RUN=str(base / "run"),
                        CAISSON_CGROUP_PARENT=parent,
                        CAISSON_MIGRATION_NETNS=ns,
                        CAISSON_MIGRATION_ADDRESS=addr,
                    )
                )
            nodes = {name: (eng, Node.objects.get(name=name)) for name, eng in engines.items()}

            def restart(name: str, **env) -> None:
                """node ``name``'s agent started again (killed or stopped first), with ``env`` added."""
                index = 0 if name == "node-ma" else 1
                stop_agent(agents[index])
                ns, addr = (ns_a, addr_a) if index == 0 else (ns_b, addr_b)
                base = tmp_path / name
                agents[index] = start_agent(
                    services_env,
                    name,
                    tmp_path / f"{name}-{len(env)}.log",
                    CAISSON_ROOT=str(base / "state"),
                    CAISSON_RUN=str(base / "run"),
                    CAISSON_CGROUP_PARENT=f"{cgroup_parent}-{name}",
                    CAISSON_MIGRATION_NETNS=ns,
                    CAISSON_MIGRATION_ADDRESS=addr,
                    **env,
                )

            nodes["restart"] = restart
            yield nodes
        finally:
            for agent in agents:
                stop_agent(agent)
            for eng in engines.values():
                for ctid in eng.ids():
                    eng.destroy(ctid, force=True)
                mounts = eng.cgroups.mounts
                for root in mounts.v1_roots() + ([mounts.unified] if mounts.unified else []):
                    shutil.rmtree(os.path.join(root, eng.cgroups.parent), ignore_errors=True)


def _online():
    Node.objects.filter(name__in=["node-ma", "node-mb"]).update(last_seen=timezone.now())  # no beat runs here


def _mirror(eng, node, ctid):
    """The row as the source's agent would mirror it (its tick does not run in this test)."""
    status = eng.status(ctid)
    config = eng.config(ctid)
    return Container.objects.update_or_create(
        ctid=ctid,
        defaults={
            "node": node,
            "status": status.status,
            "hostname": status.hostname,
            "config": dict(config.current.values),
        },
    )[0]


def _migrated(user, ctid: int, target: str) -> str:
    """The container migrated through the API by ``user``; the job's log, once it ended well."""
    answer = client_for(user).post(f"/api/containers/{ctid}/migrate/", {"target": target}, format="json")
    assert answer.status_code == 202, answer.content
    job = wait_job(Job.objects.get(pk=answer.json()["job"]["id"]), timeout=180)
    lines = "\n".join(job.lines.values_list("text", flat=True))
    assert job.status == "ok", lines
    return lines


def _data_file(eng, ctid):
    return eng.layout.root / "images" / str(ctid) / f"subvol-{ctid}-disk-0.subvol" / "root" / "data"


@pytest.mark.django_db(transaction=True)
def test_offline_then_restart_migration_through_the_api_moves_data_and_the_row(
    two_nodes, busybox_template, ctid_factory, make_user
):
    (eng_a, node_a), (eng_b, node_b) = two_nodes["node-ma"], two_nodes["node-mb"]
    admin = make_user("admin", "Administrator")
    ctid = ctid_factory()
    eng_a.create(ctid, busybox_template, {"hostname": f"mig{ctid}", "memory": "128", "swap": "0"})
    data = os.urandom(3 << 20)
    _data_file(eng_a, ctid).write_bytes(data)
    rules = "[OPTIONS]\nenable: 1\n\n[RULES]\nIN ACCEPT -p tcp -dport 22\n"
    (eng_a.layout.root / "firewall").mkdir(mode=0o700, exist_ok=True)
    (eng_a.layout.root / "firewall" / f"{ctid}.fw").write_text(rules)
    container = _mirror(eng_a, node_a, ctid)
    pool = Pool.objects.create(name="migpool")
    Container.objects.filter(pk=container.pk).update(pool=pool)
    operator = make_user("op", "Operator", f"/ct/{ctid}")
    _online()

    lines = _migrated(admin, ctid, "node-mb")
    assert "verified" in lines and "removing container" in lines
    assert not eng_a.exists(ctid) and eng_b.exists(ctid)
    assert hashlib.sha256(_data_file(eng_b, ctid).read_bytes()).digest() == hashlib.sha256(data).digest()
    row = Container.objects.get(ctid=ctid)
    assert row.pk == container.pk and row.node_id == node_b.pk and row.pool_id == pool.pk  # the same row moved
    assert AccessEntry.objects.filter(user=operator, path=f"/ct/{ctid}").exists()
    assert (eng_b.layout.root / "firewall" / f"{ctid}.fw").read_text() == rules
    assert list(FirewallFile.objects.filter(name=f"{ctid}.fw").values_list("node__name", flat=True)) == ["node-mb"]
    receiver = Job.objects.get(kind="vzmigrate_in", target=str(ctid))
    assert receiver.node_id == node_b.pk and receiver.status == "ok"

    # Restart mode, back: running on node-mb, stopped, moved, running on node-ma.
    eng_b.start(ctid)
    _mirror(eng_b, node_b, ctid)
    _online()
    refused = client_for(admin).post(f"/api/containers/{ctid}/migrate/", {"target": "node-ma"}, format="json")
    assert refused.status_code == 409 and "restart mode" in refused.content.decode()
    answer = client_for(admin).post(
        f"/api/containers/{ctid}/migrate/", {"target": "node-ma", "restart": True}, format="json"
    )
    assert answer.status_code == 202, answer.content
    job = wait_job(Job.objects.get(pk=answer.json()["job"]["id"]), timeout=180)
    assert job.status == "ok", "\n".join(job.lines.values_list("text", flat=True))
    assert not eng_b.exists(ctid) and eng_a.status(ctid).status == "running"
    assert (
        eng_a.exec_output(ctid, ["sha256sum", "/root/data"])[1].split()[0].decode() == hashlib.sha256(data).hexdigest()
    )
    assert Container.objects.get(ctid=ctid).node_id == node_a.pk

    # Node evacuation from the node page: everything of node-ma (running too) to node-mb.
    _mirror(eng_a, node_a, ctid)
    _online()
    answer = client_for(admin).post(
        "/nodes/node-ma/migrate-all", {"target": "node-mb", "restart": "1"}, HTTP_X_REQUESTED_WITH="fetch"
    )
    assert answer.status_code == 202, answer.content
    job = wait_job(Job.objects.get(pk=answer.json()["job"]["id"]), timeout=180)
    assert job.status == "ok", "\n".join(job.lines.values_list("text", flat=True))
    assert not eng_a.ids() and eng_b.status(ctid).status == "running"
    eng_b.stop(ctid)


@pytest.mark.django_db(transaction=True)
def test_snapshots_travel_through_the_jobs_between_overlay_storages(
    two_nodes, busybox_template, ctid_factory, make_user
):
    """The API's migration of a container with a snapshot, both nodes with an overlay storage: the job
    sends its layers, the snapshot is listed on the target and rolls back there."""
    from engine.storage import cfg
    from engine.storage.base import StorageDef
    from webui.models import StorageMirror

    (eng_a, node_a), (eng_b, node_b) = two_nodes["node-ma"], two_nodes["node-mb"]
    for eng, node in ((eng_a, node_a), (eng_b, node_b)):
        defs = dict(eng.storages.definitions())
        defs["ov"] = StorageDef("ov", "overlay", eng.layout.root / "ov", frozenset({"rootdir"}))
        cfg.save(eng.layout.root, defs)
        StorageMirror.objects.update_or_create(
            node=node, name="ov", defaults={"type": "overlay", "content": ["rootdir"]}
        )
    admin = make_user("admin", "Administrator")
    ctid = ctid_factory()
    eng_a.create(ctid, busybox_template, {"hostname": f"mig{ctid}", "rootfs": "ov:0", "memory": "128"})

    def inside(eng, script: str) -> bytes:
        eng.start(ctid)
        try:
            return eng.exec_output(ctid, ["/bin/sh", "-c", script])[1]
        finally:
            eng.stop(ctid)

    inside(eng_a, "echo one > /root/state")
    eng_a.snapshot(ctid, "first", "kept on the way")
    inside(eng_a, "echo two > /root/state")
    container = _mirror(eng_a, node_a, ctid)
    Container.objects.filter(pk=container.pk).update(snapshots=[{"name": "first"}, {"name": "current"}])
    _online()
    lines = _migrated(admin, ctid, "node-mb")
    assert "with their snapshots (first) as overlay streams" in lines
    assert not eng_a.exists(ctid) and Container.objects.get(ctid=ctid).node_id == node_b.pk
    assert [(s.name, s.description.strip()) for s in eng_b.list_snapshots(ctid)][0] == ("first", "kept on the way")
    assert inside(eng_b, "cat /root/state") == b"two\n"
    eng_b.rollback(ctid, "first")
    assert inside(eng_b, "cat /root/state") == b"one\n"


@pytest.mark.django_db(transaction=True)
def test_a_source_agent_killed_half_way_leaves_the_container_whole_there_and_the_target_clean(
    two_nodes, busybox_template, ctid_factory, make_user
):
    """The whole source agent (its process group) is killed in the middle of the stream; its next start
    recovers the container (unlocked, started again as it ran), the receiver job on the target fails and
    removes its copy, and the row never left the source."""
    (eng_a, node_a), (eng_b, _) = two_nodes["node-ma"], two_nodes["node-mb"]
    admin = make_user("admin", "Administrator")
    ctid = ctid_factory()
    eng_a.create(ctid, busybox_template, {"hostname": f"kill{ctid}", "memory": "128", "swap": "0"})
    data = os.urandom(3 << 20)
    _data_file(eng_a, ctid).write_bytes(data)
    eng_a.start(ctid)
    _mirror(eng_a, node_a, ctid)
    two_nodes["restart"]("node-ma", CAISSON_FAULT_AT="migrate:sending", CAISSON_FAULT_GROUP="1")
    _online()
    answer = client_for(admin).post(
        f"/api/containers/{ctid}/migrate/", {"target": "node-mb", "restart": True}, format="json"
    )
    assert answer.status_code == 202, answer.content
    receiver = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        receiver = Job.objects.filter(kind="vzmigrate_in", target=str(ctid)).first()
        if receiver is not None and not receiver.active and eng_a.config(ctid).current.values.get("lock"):
            break
        time.sleep(0.2)
    assert receiver is not None and receiver.status == "error", receiver and receiver.message
    assert eng_a.config(ctid).current.values.get("lock") == "migrate"  # what the killed agent left
    two_nodes["restart"]("node-ma")  # its start recovers
    job = Job.objects.get(pk=answer.json()["job"]["id"])
    assert job.status == "error"
    assert "lock" not in eng_a.config(ctid).current.values and eng_a.status(ctid).status == "running"
    assert (
        eng_a.exec_output(ctid, ["sha256sum", "/root/data"])[1].split()[0].decode() == hashlib.sha256(data).hexdigest()
    )
    assert not eng_b.exists(ctid) and not list((eng_b.layout.root / "migrate").glob("*"))
    assert Container.objects.get(ctid=ctid).node_id == node_a.pk
    eng_a.stop(ctid)


@pytest.mark.django_db
def test_migration_requests_are_checked_and_refused_naming_what_is_wrong(make_user, node):
    from webui.models import StorageMirror

    other = Node.objects.create(name="node-z", last_seen=timezone.now())
    StorageMirror.objects.create(node=other, name="local", type="dir", content=["rootdir", "vztmpl"])
    ct = Container.objects.create(ctid=97_100, node=node, status="stopped", config={"rootfs": "local:97100/x"})
    admin, operator = make_user("admin", "Administrator"), make_user("op", "Operator")
    url = f"/api/containers/{ct.ctid}/migrate/"
    assert client_for(operator).post(url, {"target": "node-z"}, format="json").status_code == 403  # no VM.Migrate
    for body, needle in (
        ({"target": "nowhere"}, "no node named"),
        ({"target": node.name}, "is on node"),
        ({"target": "node-z", "online": True}, "live migration is not supported"),
        ({"target": "node-z", "bogus": 1}, "bogus"),
        ({}, "target"),
    ):
        answer = client_for(admin).post(url, body, format="json")
        assert answer.status_code == 400 and needle in answer.content.decode(), (body, answer.content)
    Container.objects.filter(pk=ct.pk).update(status="running")
    answer = client_for(admin).post(url, {"target": "node-z"}, format="json")
    assert answer.status_code == 409 and "restart mode" in answer.content.decode()
    Node.objects.filter(pk=other.pk).update(last_seen=timezone.now() - timezone.timedelta(hours=1))
    answer = client_for(admin).post(url, {"target": "node-z", "restart": True}, format="json")
    assert answer.status_code == 503 and "offline" in answer.content.decode()
    assert not Job.objects.exists()  # nothing queued by any refusal

    # Snapshots travel only between storages of one kind on both nodes; elsewhere refused naming
    # them and the storage, unless dropped.
    Node.objects.filter(pk=other.pk).update(last_seen=timezone.now())
    Container.objects.filter(pk=ct.pk).update(status="stopped", snapshots=[{"name": "before"}, {"name": "current"}])
    answer = client_for(admin).post(url, {"target": "node-z"}, format="json")
    text = answer.content.decode()
    assert answer.status_code == 409 and "snapshots (before)" in text and "'local' on node 'node-z' (dir)" in text
    assert not Job.objects.exists()
    answer = client_for(admin).post(url, {"target": "node-z", "drop_snapshots": True}, format="json")
    assert answer.status_code == 202, answer.content
    assert Job.objects.get().params["drop_snapshots"] is True
    Job.objects.all().delete()
    StorageMirror.objects.filter(node=other).update(type="btrfs")
    answer = client_for(admin).post(url, {"target": "node-z"}, format="json")  # btrfs there, none here
    assert answer.status_code == 409 and "(btrfs) cannot keep them" in answer.content.decode()
    StorageMirror.objects.create(node=node, name="local", type="btrfs", content=["rootdir"])
    assert client_for(admin).post(url, {"target": "node-z"}, format="json").status_code == 202
    assert Job.objects.get().params["drop_snapshots"] is False
    Job.objects.all().delete()

    # Node evacuation: VM.Migrate on every container, checked before anything is queued.
    Node.objects.filter(pk=other.pk).update(last_seen=timezone.now())
    answer = client_for(operator).post(f"/api/nodes/{node.name}/migrateall/", {"target": "node-z"}, format="json")
    assert answer.status_code == 403 and "VM.Migrate" in answer.content.decode()
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_proxmox_migrate_endpoint_checks_vm_migrate_on_the_container(make_user, node):
    from django.test import Client

    from tests.webui.test_pve_api import login

    Node.objects.create(name="node-z", last_seen=timezone.now())
    Container.objects.create(ctid=97_101, node=node, status="stopped", config={"rootfs": "local:97101/x"})
    make_user("alice", "Operator", "/")
    client = Client()
    data = login(client, "alice@pve").json()["data"]
    client.cookies["PVEAuthCookie"] = data["ticket"]
    answer = client.post(
        f"/api2/json/nodes/{node.name}/lxc/97101/migrate",
        {"target": "node-z"},
        HTTP_CSRFPREVENTIONTOKEN=data["CSRFPreventionToken"],
    )
    assert answer.status_code == 403 and "VM.Migrate" in answer.content.decode()
    make_user("root2", "Administrator", "/")
    client = Client()
    data = login(client, "root2@pve").json()["data"]
    client.cookies["PVEAuthCookie"] = data["ticket"]
    answer = client.post(
        f"/api2/json/nodes/{node.name}/lxc/97101/migrate",
        {"target": "node-z", "online": 1},
        HTTP_CSRFPREVENTIONTOKEN=data["CSRFPreventionToken"],
    )
    assert answer.status_code == 400 and "live migration" in answer.content.decode()


@pytest.mark.django_db
def test_the_pages_offer_migrate_to_who_may_and_refuse_the_others(make_user, node):
    other = Node.objects.create(name="node-z", last_seen=timezone.now())
    Container.objects.create(ctid=97_102, node=node, status="stopped", config={"rootfs": "local:97102/x"})
    admin, operator = make_user("admin", "Administrator"), make_user("op", "Operator")
    page = client_for(admin).get("/ct/97102/").content.decode()
    assert 'id="migrate-form"' in page and "<option>node-z</option>" in page
    assert 'id="migrate-form"' not in client_for(operator).get("/ct/97102/").content.decode()
    assert client_for(operator).post("/ct/97102/migrate", {"target": "node-z"}).status_code == 403
    assert 'id="node-migrate-all"' in client_for(admin).get(f"/nodes/{node.name}/").content.decode()
    refused = client_for(operator).post(f"/nodes/{node.name}/migrate-all", {"target": other.name})
    assert refused.status_code == 403
    assert not Job.objects.exists()
