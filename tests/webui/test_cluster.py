"""Many nodes, one console: join tokens, a second node agent joining with one, a job on each node, the
datacenter view of both, a node leaving and the removal of a dead one."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from tests.webui.api_helpers import client_for
from tests.webui.conftest import REPO, start_agent, stop_agent, wait_job
from webui import keys
from webui.models import Container, JoinToken, MetricSample, Node, StorageMirror
from webui.models.cluster import JoinRefused
from webui.models.queue import submit


@pytest.mark.django_db
def test_join_tokens_are_kept_hashed_refused_when_bad_expired_or_used(make_user):
    admin, operator = make_user("admin", "Administrator"), make_user("op", "Operator")
    assert client_for(operator).post("/api/nodes/join-token/", {"minutes": 5}).status_code == 403
    assert client_for(admin).post("/api/nodes/join-token/", {"minutes": 0}).status_code == 400
    answer = client_for(admin).post("/api/nodes/join-token/", {"minutes": 5})
    assert answer.status_code == 201, answer.content
    token = answer.json()["token"]
    row = JoinToken.objects.get()
    assert token not in (row.digest, row.sealed) and len(row.digest) == 64  # only a digest and a sealed box

    with pytest.raises(JoinRefused, match="unknown join token"):
        JoinToken.redeem(token[:-2] + "xx", "node-b")
    with pytest.raises(JoinRefused, match="bad node name"):
        JoinToken.redeem(token, "Node_B")
    assert not Node.objects.filter(name="node-b").exists() and JoinToken.objects.get().used_at is None

    shared = JoinToken.redeem(token, "node-b")
    assert shared["celery.key"] == keys.read(settings.CAISSON_SECRETS, "celery.key")
    assert Node.objects.filter(name="node-b").exists()
    with pytest.raises(JoinRefused, match="used already .by node 'node-b'"):
        JoinToken.redeem(token, "node-c")

    _, late = JoinToken.issue({}, admin, 1)
    JoinToken.objects.filter(used_at=None).update(expires=timezone.now() - timedelta(seconds=1))
    with pytest.raises(JoinRefused, match="expired"):
        JoinToken.redeem(late, "node-c")
    Node.objects.filter(name="node-b").update(last_seen=timezone.now())
    _, again = JoinToken.issue({}, admin, 5)
    with pytest.raises(JoinRefused, match="is online already"):
        JoinToken.redeem(again, "node-b")  # an online node's name is not taken over


def join(services_env, token: str, name: str, tmp_path, database: str | None = None):
    return subprocess.run(
        [sys.executable, "-m", "tasks.join", "--database", database or services_env["DATABASE_URL"]]
        + ["--redis", settings.CELERY_BROKER_URL, "--token", "-", "--name", name]
        + ["--secrets", str(tmp_path / "secrets"), "--env-file", str(tmp_path / "node.env")],
        input=token + "\n",
        capture_output=True,
        text=True,
        cwd=REPO,
        env=services_env,
        timeout=60,
    )


def wait_for(check, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    pytest.fail(f"{what} did not happen within {timeout:g} s")


@pytest.mark.django_db(transaction=True)
def test_a_second_node_joins_runs_jobs_shows_in_the_datacenter_and_is_removed_when_dead(
    agent, node, services_env, make_user, cgroup_parent, tmp_path
):
    from tasks.celery import app

    admin = make_user("admin", "Administrator")
    refused = join(services_env, "whatever", "node-b", tmp_path, database=f"sqlite:///{tmp_path}/db.sqlite3")
    assert refused.returncode == 2 and "needs PostgreSQL" in refused.stderr

    out = io.StringIO()
    call_command("node", "token", "--minutes", "10", "--output", "json", "--user", "admin", stdout=out)
    token = json.loads(out.getvalue())["token"]
    joined = join(services_env, token, "node-b", tmp_path)
    assert joined.returncode == 0, joined.stderr
    env = dict(line.split("=", 1) for line in (tmp_path / "node.env").read_text().splitlines())
    assert env["CAISSON_NODE"] == "node-b" and env["DATABASE_URL"] == services_env["DATABASE_URL"]
    assert (tmp_path / "node.env").stat().st_mode & 0o077 == 0
    assert (tmp_path / "secrets" / "celery.key").stat().st_mode & 0o077 == 0
    reused = join(services_env, token, "node-b", tmp_path)
    assert reused.returncode == 2 and "used already" in reused.stderr

    # The second node: its own state root, run directory, cgroup parent and queue, the keys it received.
    second = start_agent(
        services_env,
        "node-b",
        tmp_path / "agent-b.log",
        CAISSON_ROOT=str(tmp_path / "b" / "state"),
        CAISSON_RUN=str(tmp_path / "b" / "run"),
        CAISSON_CGROUP_PARENT=f"{cgroup_parent}-b",
        CAISSON_SECRETS=env["CAISSON_SECRETS"],
    )
    try:
        node_b = Node.objects.get(name="node-b")
        wait_for(lambda: StorageMirror.objects.filter(node=node_b, name="local").exists(), "node-b's storages")
        node_b.refresh_from_db()
        assert "bridges" in node_b.info and node_b.cpus > 0  # its heartbeat mirrored its bridges and size
        jobs = [submit("noderesync", n, n.path, n.name, user=admin) for n in (node, node_b)]
        for job in jobs:
            job = wait_job(job)
            assert job.status == "ok", job.message
        for n in (node, node_b):
            app.send_task("caisson.node.tick", queue=n.queue)
            wait_for(lambda n=n: MetricSample.objects.filter(scope=f"node/{n.name}").exists(), f"{n.name} sampled")

        listed = {n["name"]: n for n in client_for(admin).get("/api/nodes/").json()["results"]}
        assert {node.name, "node-b"} <= set(listed) and listed["node-b"]["online"]
        detail = client_for(admin).get("/api/nodes/node-b/").json()
        assert detail["metrics"]["memory_total"] > 0
        out = io.StringIO()
        call_command("node", "list", "--output", "json", "--user", "admin", stdout=out)
        loads = {r["name"]: r for r in json.loads(out.getvalue())}
        assert loads["node-b"]["online"] and loads["node-b"]["memory_used"] > 0
        assert "node-b" in client_for(admin).get("/").content.decode()  # the datacenter view's tree

        answer = client_for(admin).post("/api/nodes/node-b/remove/")
        assert answer.status_code == 400 and "is online" in answer.content.decode()
    finally:
        stop_agent(second)

    # Dead: no heartbeat for longer than the offline limit (the agent is stopped; its last beat backdated).
    Node.objects.filter(name="node-b").update(last_seen=timezone.now() - timedelta(hours=1))
    Container.objects.create(ctid=97_001, node=node_b, status="stopped")
    answer = client_for(admin).post("/api/nodes/node-b/remove/")
    assert answer.status_code == 400 and "CT 97001" in answer.content.decode()
    assert Node.objects.filter(name="node-b").exists()
    Container.objects.filter(ctid=97_001).delete()  # gone from the mirror
    from django_celery_beat.models import PeriodicTask

    assert PeriodicTask.objects.filter(queue="node.node-b.tick").exists()  # its tick, on its tick queue
    assert client_for(admin).post("/api/nodes/node-b/remove/").status_code == 204
    assert not Node.objects.filter(name="node-b").exists()
    assert not PeriodicTask.objects.filter(queue__startswith="node.node-b").exists()
    assert not StorageMirror.objects.filter(node__name="node-b").exists()
    assert Node.objects.filter(name=node.name).exists()


@pytest.mark.django_db(transaction=True)
def test_a_node_leaving_is_removed_unless_it_holds_containers(services_env):
    leaving = Node.objects.create(name="node-c", last_seen=timezone.now())
    Container.objects.create(ctid=97_002, node=leaving, status="stopped")

    def leave():
        return subprocess.run(
            [sys.executable, "-m", "tasks.leave", "--name", "node-c"],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=services_env,
            timeout=60,
        )

    kept = leave()
    assert kept.returncode == 6 and "CT 97002" in kept.stderr
    leaving.refresh_from_db()
    assert not leaving.online
    Container.objects.filter(ctid=97_002).delete()
    gone = leave()
    assert gone.returncode == 0, gone.stderr
    assert not Node.objects.filter(name="node-c").exists()


@pytest.mark.django_db
def test_the_node_page_removes_a_dead_node_for_an_administrator(make_user):
    admin, auditor = make_user("admin", "Administrator"), make_user("aud", "Auditor")
    dead = Node.objects.create(name="node-d", last_seen=timezone.now() - timedelta(hours=1))
    page = client_for(admin).get("/nodes/node-d/").content.decode()
    assert 'id="node-remove"' in page
    assert 'id="node-remove"' not in client_for(auditor).get("/nodes/node-d/").content.decode()
    assert client_for(auditor).post("/nodes/node-d/remove").status_code == 403
    Container.objects.create(ctid=97_003, node=dead, status="stopped")
    client_for(admin).post("/nodes/node-d/remove", {"next": "/"})
    assert Node.objects.filter(name="node-d").exists()  # refused: a container is still listed there
    Container.objects.filter(ctid=97_003).delete()
    answer = client_for(admin).post("/nodes/node-d/remove", {"next": "/"})
    assert answer.status_code == 302 and not Node.objects.filter(name="node-d").exists()
    Node.objects.create(name="node-e", last_seen=timezone.now())
    assert 'id="node-remove"' not in client_for(admin).get("/nodes/node-e/").content.decode()  # online


@pytest.mark.django_db(transaction=True)
def test_run_sh_join_starts_only_the_agent_and_relay_and_leave_removes_the_node(
    services_env, make_user, cgroup_parent, tmp_path
):
    """The documented commands end to end, in a scratch state root, against the test database."""
    from webui.access import Access
    from webui.actions.cluster import make_join_token

    admin = make_user("admin", "Administrator")
    base = tmp_path / "joined"
    env = {k: v for k, v in services_env.items() if k not in ("DATABASE_URL", "CAISSON_NODE")}
    env.update(
        CAISSON_ROOT=str(base / "root"),
        CAISSON_SECRETS=str(base / "secrets"),
        CAISSON_RUN=str(base / "run"),
        CAISSON_CGROUP_PARENT=f"{cgroup_parent}-j",
        CAISSON_SYSTEMD="no",
    )

    def run_sh(*args: str, stdin: str = ""):
        return subprocess.run(
            ["bash", "scripts/run.sh", *args],
            cwd=REPO,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
        )

    sqlite = run_sh("join", "--database", "sqlite:////tmp/x.db", "--redis", "redis://x", "--token", "t", "--name", "n")
    assert sqlite.returncode != 0 and "needs PostgreSQL" in sqlite.stderr
    _, token = make_join_token(Access(admin), 10)
    joined = run_sh(
        "join",
        "--database",
        services_env["DATABASE_URL"],
        "--redis",
        settings.REDIS_URL,
        "--token",
        "-",
        "--name",
        "node-j",
        stdin=token + "\n",
    )
    try:
        assert joined.returncode == 0, joined.stdout + joined.stderr
        status = run_sh("status").stdout
        assert "agent: running" in status and "console: running" in status
        assert "web" not in status and "beat" not in status  # the console's machine runs those
        wait_for(lambda: Node.objects.filter(name="node-j", last_seen__isnull=False).exists(), "node-j's heartbeat")
        wait_for(lambda: StorageMirror.objects.filter(node__name="node-j").exists(), "node-j's storages")
    finally:
        left = run_sh("leave")
    assert left.returncode == 0, left.stdout + left.stderr
    assert not Node.objects.filter(name="node-j").exists()
    assert not (base / "root" / "daemons" / "cluster.env").exists()
    assert "agent: stopped" in run_sh("status").stdout
