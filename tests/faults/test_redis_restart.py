"""Redis killed and started again, empty, under a running job: the job ends and says so, the live socket that
was open keeps getting events, and the next job runs.

A private redis-server (the machine's is shared) carries the agent's queue,
the channel layer and the cache of a web server and a node agent on the
test database.  A backup job waits at a named step while Redis dies and
comes back without its data (no persistence), as after a crash.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.faults.services_kit import Live, PrivateRedis, Web, login, print_logs, wait_file
from tests.webui.conftest import start_agent, stop_agent, wait_job

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _container_row(ctid: int) -> None:
    from webui.models import Container

    deadline = time.monotonic() + 120
    while not Container.objects.filter(ctid=ctid).exists():
        assert time.monotonic() < deadline, f"container {ctid} was never mirrored"
        time.sleep(0.5)


def test_redis_restarted_empty_under_a_running_job(
    services_env, make_user, engine, busybox_template, ctid_factory, tmp_path
):
    from webui.models import Job

    hold = tmp_path / "held"
    redis = PrivateRedis(tmp_path)
    redis.start()
    env = {**services_env, "REDIS_URL": redis.url}
    make_user("ops", superuser=True)
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "redis-restart", "memory": "64"})
    engine.start(ctid)
    dump = engine.layout.root / "dump"
    name = f"rdr{os.getpid()}"
    agent = start_agent(
        env, name, tmp_path / "agent.log", CAISSON_FAULT_HOLD="backup:held", CAISSON_FAULT_HOLD_FILE=str(hold)
    )
    web = Web(env, tmp_path)
    live = None
    try:
        web.start()
        session = login(web)
        _container_row(ctid)
        live = Live(web, session, [f"ct/{ctid}"])
        answer = session.post(f"{web.base}/api/containers/{ctid}/backups/", json={"mode": "suspend"}, timeout=60)
        assert answer.status_code == 202, answer.text[-2000:]
        job = Job.objects.get(pk=answer.json()["job"]["id"])
        wait_file(hold, agent)

        redis.stop()
        redis.start()  # empty: queues, unacknowledged messages, channel groups gone
        hold.unlink()

        job = wait_job(job, timeout=180)
        assert job.status == "ok", job.message
        assert sorted(dump.glob(f"vzdump-lxc-{ctid}-*")), "the job says ok: its archive is there"
        live.until(
            lambda e: e.get("type") == "job" and e["job"]["id"] == job.pk and e["job"]["status"] == "ok",
            60,
            "the job's end on the socket opened before the restart",
        )
        assert "lock" not in engine.config(ctid).current.values

        again = session.post(f"{web.base}/api/containers/{ctid}/backups/", json={"mode": "suspend"}, timeout=60)
        assert again.status_code == 202, again.text[-2000:]
        second = Job.objects.get(pk=again.json()["job"]["id"])
        wait_file(hold, agent)
        hold.unlink()
        assert wait_job(second, timeout=180).status == "ok"
        live.until(lambda e: e.get("type") == "job" and e["job"]["id"] == second.pk, 60, "the second job")
    except BaseException:
        print_logs(tmp_path)
        raise
    finally:
        if live is not None:
            live.close()
        hold.unlink(missing_ok=True)
        web.stop()
        stop_agent(agent)
        redis.stop()
        engine.stop(ctid)
        for archive in dump.glob(f"vzdump-lxc-{ctid}-*"):
            archive.unlink()
