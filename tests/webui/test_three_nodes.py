"""Three nodes on this machine: this one and two joined agents, each with its own state root, run directory,
cgroup parent, node name and queue. A container on each, listed with its node everywhere; then one agent
killed with SIGKILL while its container is listed: the lists answer from the mirror without waiting on the
dead node, show it offline and its container "unknown" (Proxmox's greyed guest), an action on that container
is refused at once naming the offline node; the agent comes back, resyncs, and the container shows again."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from tests.webui.api_helpers import client_for, create_body, template_row
from tests.webui.conftest import start_agent, stop_agent, wait_job
from tests.webui.test_cluster import join, wait_for
from tests.webui.test_pve_api import signed_in
from webui.models import Container, Job, Node, StorageMirror

pytestmark = pytest.mark.django_db(transaction=True)


class ExtraNode:
    """A joined node's agent: ``start()`` again after ``kill()`` is the same node coming back."""

    def __init__(self, services_env, admin, name: str, base, cgroup_parent: str, template, engine):
        from webui.access import Access
        from webui.actions.cluster import make_join_token

        self.name, self.base, self.services_env = name, base, services_env
        base.mkdir(parents=True)
        _, token = make_join_token(Access(admin), 10)
        joined = join(services_env, token, name, base)
        assert joined.returncode == 0, joined.stderr
        secrets = dict(line.split("=", 1) for line in (base / "node.env").read_text().splitlines())["CAISSON_SECRETS"]
        self.env = dict(
            CAISSON_ROOT=str(base / "state"),
            CAISSON_RUN=str(base / "run"),
            CAISSON_CGROUP_PARENT=f"{cgroup_parent}-{name}",
            CAISSON_SECRETS=secrets,
        )
        store = base / "state" / engine.layout.templates.relative_to(engine.layout.root)
        store.mkdir(parents=True)
        shutil.copy2(template, store / template.name)  # the node's own template store
        self.process = None

    def start(self) -> None:
        self.process = start_agent(self.services_env, self.name, self.base / "agent.log", **self.env)

    def kill(self) -> None:
        """SIGKILL to the agent's whole process group (worker, pool, CLI service): a node that dies."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def cleanup(self) -> None:
        from engine.lifecycle import Engine

        if self.process is not None:
            stop_agent(self.process)
        node = Engine(
            root=self.base / "state", run_dir=self.base / "run", cgroup_parent=self.env["CAISSON_CGROUP_PARENT"]
        )
        for ctid in node.ids():
            node.destroy(ctid, force=True)
        for path in sorted(Path("/sys/fs/cgroup").glob(f"**/{self.env['CAISSON_CGROUP_PARENT']}"), reverse=True):
            with contextlib.suppress(OSError):
                path.rmdir()  # the node's cgroup parent, empty now


def create_on(client, node: Node, ctid: int, template: str) -> None:
    template_row(node, template)
    body = create_body(node, ctid, template=f"local:vztmpl/{template}", memory=64, swap=0, disk_size=1, start=True)
    answer = client.post("/api/containers/", body, format="json")
    assert answer.status_code == 202, answer.content
    job = wait_job(Job.objects.get(pk=answer.json()["job"]["id"]), timeout=120)
    assert job.status == "ok", list(job.lines.values_list("text", flat=True))


def tree_of(page: str, name: str) -> str:
    """A node's part of the resource tree (its <li class="node..."> up to the next node's)."""
    return re.search(rf'<li class="node[^"]*" data-node="{name}">.*?(?=<li class="node|</nav>)', page, re.S).group(0)


def test_three_nodes_list_their_containers_and_one_dying_is_shown_refused_and_resynced(
    agent, node, services_env, make_user, cgroup_parent, busybox_template, engine, ctid_factory, tmp_path
):
    admin = make_user("admin", "Administrator")
    client = client_for(admin)
    pve, ticket = signed_in(make_user)
    extras = [
        ExtraNode(services_env, admin, name, tmp_path / name, cgroup_parent, busybox_template, engine)
        for name in ("node-b", "node-c")
    ]
    try:
        for extra in extras:
            extra.start()
        for name in ("node-b", "node-c"):
            wait_for(
                lambda n=name: StorageMirror.objects.filter(node__name=n, name="local").exists(), f"{name} storages"
            )
        nodes = [node, *Node.objects.filter(name__in=("node-b", "node-c")).order_by("name")]
        shutil.copy2(busybox_template, engine.layout.templates / busybox_template.name)
        where = {}
        for row in nodes:  # a job on each node, through its own queue
            where[ctid_factory()] = row.name
            create_on(client, row, list(where)[-1], busybox_template.name)

        listed = {c["ctid"]: c for c in client.get("/api/containers/").json()["results"]}
        assert {ctid: (listed[ctid]["node"], listed[ctid]["status"]) for ctid in where} == {
            ctid: (name, "running") for ctid, name in where.items()
        }
        resources = pve.get("/api2/json/cluster/resources").json()["data"]
        guests = {r["vmid"]: (r["node"], r["status"]) for r in resources if r["type"] == "lxc"}
        assert {ctid: guests[ctid] for ctid in where} == {ctid: (name, "running") for ctid, name in where.items()}
        assert {r["node"]: r["status"] for r in resources if r["type"] == "node"} == {n.name: "online" for n in nodes}
        page = client.get("/").content.decode()
        for ctid, name in where.items():
            assert f'data-tree-ct="{ctid}"' in tree_of(page, name)
            assert f'data-ct-status-icon="{ctid}" title="running"' in page

        # node-c dies. No heartbeat comes from it any more; its last one is backdated past the offline limit.
        dead = extras[1]
        dead.kill()
        Node.objects.filter(name="node-c").update(last_seen=timezone.now() - timedelta(hours=1))
        on_c = next(ctid for ctid, name in where.items() if name == "node-c")
        alive = [ctid for ctid in where if ctid != on_c]
        listed = {c["ctid"]: c["status"] for c in client.get("/api/containers/").json()["results"]}
        assert listed[on_c] == "unknown" and {listed[c] for c in alive} == {"running"}
        assert client.get(f"/api/containers/{on_c}/").json()["status"] == "unknown"
        assert not client.get("/api/nodes/node-c/").json()["online"]
        resources = pve.get("/api2/json/cluster/resources").json()["data"]
        shown = {r["id"]: r["status"] for r in resources}
        assert shown[f"lxc/{on_c}"] == "unknown" and shown["node/node-c"] == "offline"
        assert {shown[f"lxc/{c}"] for c in alive} == {"running"}
        page = client.get("/").content.decode()
        assert '<li class="node offline" data-node="node-c">' in page
        assert f'data-ct-status-icon="{on_c}" title="unknown"' in tree_of(page, "node-c")
        node_page = client.get("/nodes/node-c/").content.decode()
        assert f'data-ct-status="{on_c}">unknown<' in node_page
        assert 'id="ct-status">unknown<' in client.get(f"/ct/{on_c}/").content.decode()

        jobs = Job.objects.count()
        refused = client.post(f"/api/containers/{on_c}/status/stop/")
        assert refused.status_code == 503 and "node 'node-c' is offline" in refused.content.decode()
        csrf = {"HTTP_CSRFPREVENTIONTOKEN": ticket["CSRFPreventionToken"]}
        refused = pve.post(f"/api2/json/nodes/node-c/lxc/{on_c}/status/stop", **csrf)
        assert refused.status_code == 595 and "node 'node-c' is offline" in refused.content.decode()
        assert Job.objects.count() == jobs  # nothing queued for a node that would never take it

        # node-c comes back: its agent's start beats, resyncs, and the container is listed as it is.
        back = timezone.now()
        dead.start()
        wait_for(lambda: Node.objects.get(name="node-c").online, "node-c's heartbeat")
        wait_for(lambda: Container.objects.get(ctid=on_c).updated_at > back, "node-c's resync of its container")
        assert client.get(f"/api/containers/{on_c}/").json()["status"] == "running"
        assert {r["id"]: r["status"] for r in pve.get("/api2/json/cluster/resources").json()["data"]}[
            f"lxc/{on_c}"
        ] == "running"
    finally:
        for extra in extras:
            extra.cleanup()


def test_a_node_going_offline_is_announced_once_per_transition(node):
    from tasks.presence import announce_offline, announce_return

    silent = Node.objects.create(name="node-x", last_seen=timezone.now() - timedelta(minutes=5))
    assert "node-x" in announce_offline()
    assert "node-x" not in announce_offline()  # the same silence: said once
    assert announce_return(silent, silent.last_seen)  # its heartbeat after the silence
    assert not announce_return(silent, timezone.now())  # an ordinary heartbeat: nothing to say
    Node.objects.filter(pk=silent.pk).update(last_seen=timezone.now() - timedelta(minutes=2))
    assert "node-x" in announce_offline()  # silent again after coming back: a new transition
    assert node.name not in announce_offline()  # an online node is never announced
