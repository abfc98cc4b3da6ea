"""The per-stage echo trace (``CAISSON_CONSOLE_TRACE``) over the real path: the in-process consumer, Redis, the
relay and a shell in a busybox container; ``bench/console_trace.py`` reads what it wrote."""

from __future__ import annotations

import asyncio
import importlib.util
import json

import pytest

import tasks.console_protocol as protocol
from tests.webui.conftest import REPO
from tests.webui.console_kit import Term, aticket, login_cookie, mirror

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def running(engine, container, node, console_relay):
    mirror(node, container, engine=engine)
    return container


def _summary():
    spec = importlib.util.spec_from_file_location("console_trace_bench", REPO / "bench" / "console_trace.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_keystroke_is_stamped_at_every_hop_and_only_when_asked(running, make_user, tmp_path, monkeypatch):
    user = make_user("tara", "Operator", "/")
    cookie = login_cookie(user)
    path = tmp_path / "trace.jsonl"

    async def scenario():
        term = Term(running, cookie, await aticket(user, running))
        assert await term.connect()
        await term.opened()
        await term.run("echo untraced-$((1+1))", b"untraced-2")
        assert not path.exists()  # off: no message carried a trace
        monkeypatch.setattr(protocol, "TRACE_PATH", str(path))
        await term.run("echo traced-$((2+2))", b"traced-4")
        await term.send_text({"type": "close"})
        await term.wait_closed()

    asyncio.run(scenario())
    lines = path.read_text().splitlines()
    assert lines  # one per keystroke frame whose echo came back
    complete = [
        dict(json.loads(line)) for line in lines if [s for s, _ in json.loads(line)] == list(protocol.TRACE_STAGES)
    ]
    assert complete, lines[:3]
    for stamps in complete:
        times = [stamps[stage] for stage in protocol.TRACE_STAGES]
        assert times == sorted(times)  # one host clock, stamped in path order
    spans = _summary().hops(lines)
    assert len(spans["whole span"]) == len(complete)
    assert all(value >= 0 for values in spans.values() for value in values)
