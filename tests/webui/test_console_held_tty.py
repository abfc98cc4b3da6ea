"""The web console in tty mode reaches the container's own /dev/tty1 and its getty, held since its start
(engine.ttys), as lxc-console does: a login there is still there at the next attach."""

from __future__ import annotations

import asyncio

import pytest

from tests.webui.console_kit import Term, aticket, login_cookie, mirror

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_web_console_logs_in_on_the_held_tty1(
    engine, busybox_template, ctid_factory, node, console_relay, make_user
):
    from engine.credentials import set_credentials

    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": "webtty"})
    set_credentials(engine, ctid, "web-tty-pass-1", None)
    rootfs = engine._rootfs(engine.config(ctid))
    with open(rootfs / "etc" / "inittab", "a") as inittab:
        inittab.write("tty1::respawn:/sbin/getty 38400 tty1\n")
    engine.start(ctid)
    try:
        from engine import ttys
        from tests.webui.console_kit import wait_until

        wait_until(lambda: "tty1" in ttys.held(engine.layout.run, ctid), 20, "the tty holder")
        mirror(node, ctid, cmode=None, engine=engine)  # no cmode: tty, a login prompt for VM.Console alone
        operator = make_user("tina", "Operator", "/")
        cookie = login_cookie(operator)

        async def first():
            term = Term(ctid, cookie, await aticket(operator, ctid))
            assert await term.connect()
            assert (await term.opened())["mode"] == "tty"
            await term.until(lambda t: b"login:" in t.output, what="login prompt")
            await term.run("root", b"assword:")
            await term.run("web-tty-pass-1", b"webtty:")
            await term.run("tty; echo IN-$((20+22))", b"IN-42")
            assert b"/dev/tty1" in term.output
            await term.send_text({"type": "close"})
            await term.wait_closed()

        async def second():
            term = Term(ctid, cookie, await aticket(operator, ctid))
            assert await term.connect()
            await term.opened()
            await term.run("echo STILL-$((1+2))", b"STILL-3")  # the shell left logged in on tty1
            await term.run("exit", b"login:")
            await term.send_text({"type": "close"})
            await term.wait_closed()

        asyncio.run(first())
        asyncio.run(second())
    finally:
        engine.destroy(ctid, force=True)
