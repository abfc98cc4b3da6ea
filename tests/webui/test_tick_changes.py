"""The node's tick: its mirror writes and publishes only containers that changed, and it runs on a queue of
its own, so an agent with every job slot on a long job keeps its heartbeat (the node does not show offline).
"""

from __future__ import annotations

import os

import pytest

from tests.webui.conftest import wait_job
from tests.webui.console_kit import wait_until
from webui import filestream
from webui.models import Container, Job, Node
from webui.models.queue import submit

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def published(monkeypatch):
    """The events the tick's mirror sends, recorded on their way to the real channel layer."""
    import tasks.mirror_changes

    sent: list[dict] = []
    real = tasks.mirror_changes.publish_many

    def record(items):
        sent.extend(event for _, event in items)
        return real(items)

    monkeypatch.setattr(tasks.mirror_changes, "publish_many", record)
    return sent


def test_the_tick_writes_and_publishes_only_what_changed(
    node, engine, busybox_template, ctid_factory, monkeypatch, published
):
    import tasks.mirror
    from tasks.mirror import sync_container
    from tasks.mirror_changes import sync_changes

    monkeypatch.setattr(tasks.mirror, "node_engine", lambda: engine)  # the agent's state root, read from here
    quiet, edited = ctid_factory(), ctid_factory()
    for ctid, name in ((quiet, "tick-quiet"), (edited, "tick-edited")):
        engine.create(ctid, busybox_template, {"hostname": name})
        sync_container(node, ctid)
    try:
        assert sync_changes(node, {quiet, edited}) == []  # nothing changed: nothing written, nothing sent
        assert published == []

        engine.set(edited, {"hostname": "tick-renamed"})  # changed on the node, outside Caisson
        Container.objects.filter(ctid=quiet).update(hostname="tampered")  # a row changed behind the mirror's back
        assert sync_changes(node, {quiet, edited}) == [quiet, edited]
        assert Container.objects.get(ctid=edited).hostname == "tick-renamed"
        assert Container.objects.get(ctid=quiet).hostname == "tick-quiet"
        assert sorted((e["type"], e["ct"]["ctid"], e["ct"]["hostname"]) for e in published) == [
            ("ct.status", quiet, "tick-quiet"),
            ("ct.status", edited, "tick-renamed"),
        ]
        published.clear()
        assert sync_changes(node, {quiet, edited}) == [] and published == []

        engine.destroy(edited)  # gone from the node: its row goes (through the full path)
        assert sync_changes(node, {quiet}) == [edited]
        assert not Container.objects.filter(ctid=edited).exists()
    finally:
        for ctid in (quiet, edited):
            if ctid in engine.ids():
                engine.destroy(ctid)
        Container.objects.filter(ctid__in=[quiet, edited]).delete()


def test_the_heartbeat_goes_on_while_every_job_slot_is_busy(agent, node, beat, engine, settings):
    """Two uploads wait for data (up to a minute each) in the agent's two job slots; beat's ticks, on the
    node's tick queue, still run and move the heartbeat."""
    from django_celery_beat.models import PeriodicTask

    from tasks.agent import schedule_tick

    settings.CAISSON_SAMPLE_INTERVAL = 1  # as the agents of the tests tick
    node = Node.objects.get(pk=node.pk)
    schedule_tick(node)  # as the agent did at its start (an earlier test's flush may have emptied the table)
    assert PeriodicTask.objects.get(name=f"tick {node.name}").queue == node.tick_queue == f"node.{node.name}.tick"
    streams = [filestream.new_id() for _ in range(2)]
    names = [f"slots-{os.getpid()}-{i}_1.0_amd64.tar.zst" for i in range(2)]
    jobs = [
        submit("tmplupload", node, node.path, name, params={"stream": stream, "name": name, "size": 4})
        for stream, name in zip(streams, names, strict=True)
    ]
    try:
        wait_until(
            lambda: Job.objects.filter(pk__in=[j.pk for j in jobs], status=Job.Status.RUNNING).count() == 2,
            timeout=60,
            what="both job slots taken",
        )
        beat()
        seen = [Node.objects.get(pk=node.pk).last_seen]
        for _ in range(3):  # three heartbeats, each newer than the one before, while both jobs still wait
            wait_until(lambda: Node.objects.get(pk=node.pk).last_seen > seen[-1], timeout=60, what="a heartbeat")
            seen.append(Node.objects.get(pk=node.pk).last_seen)
        assert Job.objects.filter(pk__in=[j.pk for j in jobs], status=Job.Status.RUNNING).count() == 2
        assert Node.objects.get(pk=node.pk).online
    finally:
        for stream in streams:
            filestream.push(stream, b"done", 0)  # the uploads end, the slots are free again
        for job in jobs:
            wait_job(job)
        for name in names:
            (engine.layout.root / "template" / "cache" / name).unlink(missing_ok=True)
