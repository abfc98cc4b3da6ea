"""The web console in console mode reaches the container's /dev/console held since its start (engine.ttys),
read-write, as ``python -m engine console`` does; without it (``console: 0``) the log stays read-only."""

from __future__ import annotations

import asyncio

import pytest

from tests.webui.console_kit import Term, aticket, login_cookie, mirror, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_cmode_console_attaches_dev_console_read_write(
    engine, busybox_template, ctid_factory, node, console_relay, make_user
):
    from engine import ttys

    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "webcons"})
    rootfs = engine._rootfs(engine.config(ctid))
    engine.start(ctid)
    try:
        wait_until(lambda: "console" in ttys.held(engine.layout.run, ctid), 20, "the tty holder")
        mirror(node, ctid, cmode="console", engine=engine)  # VM.Console alone gets the container's cmode
        operator = make_user("tina", "Operator", "/")
        cookie = login_cookie(operator)
        loop_exec = engine.exec_output

        async def scenario():
            term = Term(ctid, cookie, await aticket(operator, ctid))
            assert await term.connect()
            opened = await term.opened()
            assert opened["mode"] == "console" and not opened["readonly"]
            await term.until(lambda t: b"/dev/console" in t.output, what="the console banner")
            loop = asyncio.get_running_loop()
            # what the container writes to /dev/console reaches the page
            await loop.run_in_executor(None, loop_exec, ctid, ["sh", "-c", "echo FROM-$((6*7)) > /dev/console"])
            await term.until(lambda t: b"FROM-42" in t.output, what="output written to /dev/console")
            # and what the page types is read from /dev/console inside
            script = '(read line </dev/console; echo "got:$line" > /tmp/got) </dev/null >/dev/null 2>&1 &'
            await loop.run_in_executor(None, loop_exec, ctid, ["sh", "-c", script])
            # typed before or after the read starts: the terminal's line discipline keeps the line
            await term.com.send_to(bytes_data=b"typed-in\r")
            await loop.run_in_executor(
                None, wait_until, lambda: (rootfs / "tmp/got").exists(), 20, "the typed line read inside"
            )
            assert (rootfs / "tmp/got").read_text().strip() == "got:typed-in"
            assert not any("read-only" in e["message"] for e in term.errors())
            await term.send_text({"type": "close"})
            await term.wait_closed()

        asyncio.run(scenario())
        assert "console" in ttys.held(engine.layout.run, ctid)  # left held for the next attach
    finally:
        engine.destroy(ctid, force=True)
