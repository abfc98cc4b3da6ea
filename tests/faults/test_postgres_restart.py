"""PostgreSQL stopped and started again under a running job: the job ends and says how, live updates come
again, and nothing a client was told happened did not happen.

A private cluster (:func:`tests.faults.services_kit.private_postgres`; the
machine's server is shared, so it is never restarted) holds the web server's
and a node agent's database.  A backup job waits at a named step (the fault
hook's hold) while the cluster goes down: requests made meanwhile get an
error, never a job; then it comes back, the job goes on, and its end reaches
the API, the database and an open live socket.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.faults.services_kit import (
    MAKE_ADMIN,
    Live,
    Web,
    login,
    manage,
    print_logs,
    private_postgres,
    wait_file,
)
from tests.webui.conftest import start_agent, stop_agent

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _job(session, web: Web, job_id: int, timeout: float = 120.0) -> dict:
    """The job as the API shows it.  Right after the database came back the web server's pool may still be
    reconnecting: until then an answer is an error saying so (a 5xx), never a wrong job."""
    deadline = time.monotonic() + timeout
    while True:
        answer = session.get(f"{web.base}/api/jobs/{job_id}/", timeout=30)
        if answer.status_code == 200:
            return answer.json()
        assert answer.status_code >= 500 and "error" in answer.json(), answer.text[-2000:]
        assert time.monotonic() < deadline, f"the API still fails: {answer.text[-2000:]}"
        time.sleep(0.5)


def _wait_job_end(session, web: Web, job_id: int, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = _job(session, web, job_id)
        if job["status"] not in ("queued", "running"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
        time.sleep(0.2)


def _wait_container_row(session, web: Web, ctid: int) -> None:
    deadline = time.monotonic() + 120
    while session.get(f"{web.base}/api/containers/{ctid}/", timeout=30).status_code != 200:
        assert time.monotonic() < deadline, f"container {ctid} never reached the private database"
        time.sleep(0.5)


def test_postgresql_restarted_under_a_running_job(services_env, engine, busybox_template, ctid_factory, tmp_path):
    hold = tmp_path / "held"
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "pg-restart", "memory": "64"})
    engine.start(ctid)
    dump = engine.layout.root / "dump"
    with private_postgres() as pg:
        env = {**services_env, "DATABASE_URL": pg.url}
        manage(env, "migrate", "--noinput")
        manage(env, script=MAKE_ADMIN)
        name = f"pgr{os.getpid()}"
        agent = start_agent(
            env, name, tmp_path / "agent.log", CAISSON_FAULT_HOLD="backup:held", CAISSON_FAULT_HOLD_FILE=str(hold)
        )
        web = Web(env, tmp_path)
        live = None
        try:
            web.start()
            session = login(web)
            _wait_container_row(session, web, ctid)
            live = Live(web, session, [f"ct/{ctid}"])
            answer = session.post(f"{web.base}/api/containers/{ctid}/backups/", json={"mode": "suspend"}, timeout=60)
            assert answer.status_code == 202, answer.text[-2000:]
            job_id = answer.json()["job"]["id"]
            wait_file(hold, agent)  # the job runs, the container's lock taken
            jobs_before = pg.query("select count(*) from webui_job")[0][0]

            pg.stop()
            refused = session.post(f"{web.base}/api/containers/{ctid}/backups/", json={"mode": "suspend"}, timeout=60)
            assert refused.status_code >= 500, refused.text[-2000:]  # an error, never a 202 for a job not recorded
            read = session.get(f"{web.base}/api/jobs/{job_id}/", timeout=60)
            assert read.status_code >= 500, read.text[-2000:]
            pg.start()
            hold.unlink()  # the job goes on, on a database that was restarted under it

            job = _wait_job_end(session, web, job_id)
            archives = sorted(dump.glob(f"vzdump-lxc-{ctid}-*"))
            assert job["status"] == "ok", job
            assert archives, "the job says ok: its archive is there"
            assert pg.query("select count(*) from webui_job")[0][0] == jobs_before  # the refused one: no row
            assert pg.query("select status from webui_job where id = %s", job_id) == [("ok",)]
            listed = session.get(f"{web.base}/api/containers/{ctid}/backups/", timeout=30).json()
            rows = listed["results"] if isinstance(listed, dict) else listed
            assert [a for a in rows if str(a.get("volid", a.get("name", ""))).endswith(archives[-1].name)], rows
            live.until(
                lambda e: e.get("type") == "job" and e["job"]["id"] == job_id and e["job"]["status"] == "ok",
                60,
                "the job's end",
            )
            assert "lock" not in engine.config(ctid).current.values
            assert engine.status(ctid, stats=False).status == "running"

            # Live updates and jobs work as before: a second backup, followed on the same socket.
            again = session.post(f"{web.base}/api/containers/{ctid}/backups/", json={"mode": "suspend"}, timeout=60)
            assert again.status_code == 202, again.text[-2000:]
            second = again.json()["job"]["id"]
            wait_file(hold, agent)
            hold.unlink()
            assert _wait_job_end(session, web, second)["status"] == "ok"
            live.until(lambda e: e.get("type") == "job" and e["job"]["id"] == second, 60, "the second job")
        except BaseException:
            print_logs(tmp_path)
            for row in pg.query("select job_id, seq, text from webui_jobline order by job_id, seq"):
                print(*row)
            raise
        finally:
            if live is not None:
                live.close()
            hold.unlink(missing_ok=True)
            web.stop()
            stop_agent(agent)
            engine.stop(ctid)
            for archive in dump.glob(f"vzdump-lxc-{ctid}-*"):
                archive.unlink()
