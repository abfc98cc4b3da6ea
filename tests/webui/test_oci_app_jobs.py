"""Application containers under the node agent: their console in the task log, the restart policy applied
by the tick (a start job of its own, in the task log)."""

from __future__ import annotations

import time

import pytest

from tests.engine.oci_images import ImageBuilder, busybox_base
from tests.webui.conftest import wait_job
from webui.models import Container, Job
from webui.models.queue import submit

SCRIPT = (
    "if [ -e /tmp/ran ]; then echo second-run; trap 'echo last-words; exit 0' TERM; while :; do sleep 1; done; "
    "else touch /tmp/ran; echo first-run; exit 3; fi"
)


@pytest.mark.django_db(transaction=True)
def test_a_failed_application_is_restarted_and_its_console_reaches_the_task_log(
    agent, node, engine, ctid_factory, tmp_path
):
    from tasks.celery import app

    image = ImageBuilder()
    image.add_layer(busybox_base())
    image.config = {"Entrypoint": ["/bin/sh", "-c", SCRIPT], "Env": ["PATH=/bin"]}
    ctid = ctid_factory()
    engine.create(
        ctid, image.write_archive(tmp_path / "flaky_1.tar"), {"hostname": f"flaky{ctid}", "restart": "on-failure"}
    )
    Container.objects.create(ctid=ctid, node=node, status="stopped")
    first = wait_job(submit("vzstart", node, f"/ct/{ctid}", str(ctid)))
    assert first.status == "ok", first.message
    assert any("application (/bin/sh -c" in line for line in first.lines.values_list("text", flat=True))
    deadline = time.monotonic() + 60
    restart = None
    while restart is None:  # the tick, asked until it has seen the first run end and queued a start
        assert time.monotonic() < deadline, "no restart job was queued"
        app.send_task("caisson.node.tick", queue=node.queue)
        time.sleep(0.5)
        restart = Job.objects.filter(kind="vzstart", target=str(ctid)).exclude(pk=first.pk).first()
    restart = wait_job(restart)
    assert restart.status == "ok", restart.message
    assert "restart policy" in list(restart.lines.values_list("text", flat=True))
    deadline = time.monotonic() + 30
    while b"second-run" not in engine.console_log(ctid):
        assert time.monotonic() < deadline, engine.console_log(ctid)
        time.sleep(0.1)
    stop = wait_job(submit("vzshutdown", node, f"/ct/{ctid}", str(ctid), params={"timeout": 30, "force_stop": False}))
    assert stop.status == "ok", stop.message
    assert "console: last-words" in list(stop.lines.values_list("text", flat=True))
