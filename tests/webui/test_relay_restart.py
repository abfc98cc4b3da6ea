"""The console relay killed (SIGKILL) under an open console, then started again: the console ends cleanly
or resumes; it never hangs open with nobody behind it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest

from tests.webui.conftest import REPO, _wait_for
from tests.webui.console_kit import Term, aticket, login_cookie, mirror

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _relay(services_env, name: str, log) -> subprocess.Popen:
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tasks.console_relay", "--loglevel", "DEBUG"],
            cwd=REPO,
            env={**services_env, "CAISSON_NODE": name, "CAISSON_CONSOLE_GRACE": "2"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _wait_for(lambda: b"console relay ready" in log.read_bytes(), "the console relay", log, process)
    return process


def test_console_relay_killed_under_an_open_console(services_env, tmp_path, engine, container, make_user, settings):
    from django.utils import timezone

    from webui.models import Node

    name = f"relay-kill-{os.getpid()}"
    node = Node.objects.create(name=name, last_seen=timezone.now())
    mirror(node, container, engine=engine)
    operator = make_user("rk-olga", "Operator", "/")
    cookie = login_cookie(operator)
    relay = _relay(services_env, name, tmp_path / "relay1.log")
    restarted = None
    try:

        async def scenario():
            nonlocal restarted
            term = Term(container, cookie, await aticket(operator, container))
            assert await term.connect()
            await term.opened()
            await term.run("echo before-$((40+2))", b"before-42")
            os.killpg(relay.pid, signal.SIGKILL)
            relay.wait()
            restarted = _relay(services_env, name, tmp_path / "relay2.log")
            await term.com.send_to(bytes_data=b"echo after-$((50+5))\r")
            # Either the session resumes on the new relay, or the socket closes with an error saying so.
            await term.until(lambda t: b"after-55" in t.output or t.closed is not None or t.errors(), 30, "an end")
            if b"after-55" not in term.output:  # the shell went with the relay's pty: the session ends, saying so
                assert [e for e in term.errors() if e.get("fatal")], term.controls
                await term.wait_closed()
            fresh = Term(container, cookie, await aticket(operator, container))  # a new console works at once
            assert await fresh.connect()
            await fresh.opened()
            await fresh.run("echo fresh-$((60+6))", b"fresh-66")
            await fresh.send_text({"type": "close"})
            await fresh.wait_closed()

        asyncio.run(scenario())
    finally:
        for process in (relay, restarted):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(20)
