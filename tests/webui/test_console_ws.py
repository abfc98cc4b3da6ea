"""The console websocket end to end: tickets, origin, protocol limits, resume, clean-up.

Real path: ``WebsocketCommunicator`` against ``webui.asgi.application`` (origin check, session
auth, the consumer) → Redis channel layer → ``python -m tasks.console_relay`` → pty in a real
busybox container run by the ``engine`` fixture.
"""

from __future__ import annotations

import asyncio
import os
import threading
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from tests.webui.conftest import CONSOLE_GRACE
from tests.webui.console_kit import Term, aticket, container_pids, login_cookie, mirror, ticket, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def running(engine, container, node, console_relay):
    """A running busybox container, mirrored into the database on this node."""
    mirror(node, container, engine=engine)
    return container


@pytest.fixture
def operator(make_user):
    return make_user("olga", "Operator", "/")


def init_pid(engine, ctid: int) -> int:
    return engine.status(ctid, stats=False).pid


def test_no_console_privilege_no_ticket_and_no_socket(running, make_user, operator):
    from webui.models import AuditEntry, ConsoleTicket

    auditor = make_user("audrey", "Auditor", "/")
    client = Client()
    client.force_login(auditor)
    answer = client.post(f"/ct/{running}/console/ticket", {"mode": "shell"})
    assert answer.status_code == 403
    assert "VM.Console" in answer.json()["error"]["message"]
    assert not ConsoleTicket.objects.filter(user=auditor).exists()
    assert AuditEntry.objects.filter(username="audrey", outcome="denied").exists()

    # A ticket made while the user still had the privilege does not open a socket once it is gone.
    from webui.models import AccessEntry

    token = ticket(operator, running)
    cookie = login_cookie(operator)
    AccessEntry.objects.filter(user=operator).delete()

    async def scenario():
        term = Term(running, cookie, token)
        assert await term.connect()
        assert await term.wait_closed() == 4403
        assert "VM.Console" in term.errors()[0]["message"]

    asyncio.run(scenario())


def test_ticket_post_needs_csrf(running, operator):
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    assert client.post(f"/ct/{running}/console/ticket", {"mode": "shell"}).status_code == 403


def test_bad_tickets_are_refused(running, make_user, operator):
    from webui.models import AuditEntry, ConsoleTicket

    other_user = make_user("otto", "Operator", "/")
    cookie = login_cookie(operator)
    expired = ticket(operator, running)
    ConsoleTicket.objects.filter(user=operator).update(expires=timezone.now() - timedelta(seconds=1))
    reused = ticket(operator, running)
    of_other_user = ticket(other_user, running)

    async def refused(token: str) -> str:
        term = Term(running, cookie, token)
        assert await term.connect()
        assert await term.wait_closed() == 4403
        return term.errors()[0]["message"]

    async def scenario():
        assert "forged" in await refused("x" * 43)
        assert "forged" in await refused("")
        assert "expired" in await refused(expired)
        assert "another user" in await refused(of_other_user)
        first = Term(running, cookie, reused)
        assert await first.connect()
        await first.opened()
        assert "already used" in await refused(reused)
        await first.send_text({"type": "close"})
        await first.wait_closed()

    asyncio.run(scenario())
    assert AuditEntry.objects.filter(action="console.refused", outcome="denied").count() == 5
    assert AuditEntry.objects.filter(action="console.open", path=f"/ct/{running}").count() == 1


def test_ticket_for_another_container_is_refused(running, node, operator, ctid_factory):
    other = mirror(node, ctid_factory())
    token = ticket(operator, other.ctid)
    cookie = login_cookie(operator)

    async def scenario():
        term = Term(running, cookie, token)
        assert await term.connect()
        assert await term.wait_closed() == 4403
        assert f"for CT {other.ctid}, not CT {running}" in term.errors()[0]["message"]

    asyncio.run(scenario())


def test_foreign_origin_is_refused(running, operator):
    token = ticket(operator, running)
    cookie = login_cookie(operator)

    async def scenario():
        term = Term(running, cookie, token, origin=b"http://evil.example")
        assert not await term.connect()
        term = Term(running, cookie, token, origin=b"")
        assert not await term.connect()

    asyncio.run(scenario())
    from webui.models import ConsoleTicket

    assert ConsoleTicket.objects.get(user=operator).used is None  # refused before the ticket was looked at


def test_shell_echo_resize_limits_and_bad_frames(running, operator, engine):
    cookie = login_cookie(operator)

    async def scenario():
        term = Term(running, cookie, await aticket(operator, running), query="&cols=90&rows=30")
        assert await term.connect()
        status = await term.opened()
        assert status["mode"] == "shell" and not status["resumed"]
        await term.run("echo $((6*7))", b"42")
        await term.run("stty size", b"30 90")
        # Refused sizes: a message, the session goes on at the last good size.
        for cols, rows in ((0, 0), (100000, 100000), ("80", 24), (True, 5)):
            before = len(term.errors())
            await term.send_text({"type": "resize", "cols": cols, "rows": rows})
            await term.until(lambda t, n=before: len(t.errors()) > n, what="resize refusal")
            assert "resize refused" in term.errors()[-1]["message"] and not term.errors()[-1]["fatal"]
        await term.send_text({"type": "resize", "cols": 101, "rows": 33})
        await term.run("stty size", b"33 101")
        # Malformed control frames: a message each, nothing else.
        for junk in ("{", "[]", '{"type": 5}', '"resize"', '{"type": "reboot"}', "null"):
            before = len(term.errors())
            await term.send_text(junk)
            await term.until(lambda t, n=before: len(t.errors()) > n, what="control refusal")
        # Binary garbage is terminal input like any other: the shell survives what it can read.
        await term.com.send_to(bytes_data=bytes(range(32, 256)) * 4)
        await term.com.send_to(bytes_data=b"\x03")
        await term.run("echo still-$((40+2))", b"still-42")
        assert term.closed is None
        await term.send_text({"type": "close"})
        assert await term.wait_closed() == 1000

    asyncio.run(scenario())
    assert engine.status(running, stats=False).status == "running"


def test_oversize_frame_ends_the_session_cleanly(running, operator, engine):
    cookie = login_cookie(operator)
    before = container_pids(init_pid(engine, running))

    async def scenario():
        other = Term(running, cookie, await aticket(operator, running))
        assert await other.connect()
        await other.opened()
        term = Term(running, cookie, await aticket(operator, running))
        assert await term.connect()
        await term.opened()
        await term.run("echo big-$((1+1))", b"big-2")
        await term.com.send_to(bytes_data=b"a" * (64 * 1024 + 1))
        assert await term.wait_closed() == 1009
        assert "over the limit" in term.errors()[-1]["message"]
        await other.run("echo other-$((3*3))", b"other-9")  # another session of the container is unaffected
        await other.send_text({"type": "close"})
        await other.wait_closed()

    asyncio.run(scenario())
    wait_until(lambda: container_pids(init_pid(engine, running)) == before, what="the shells gone")
    assert engine.status(running, stats=False).status == "running"


def test_reconnect_within_grace_resumes_the_same_shell(running, operator):
    cookie = login_cookie(operator)

    async def scenario():
        term = Term(running, cookie, await aticket(operator, running))
        assert await term.connect()
        session = (await term.opened())["session"]
        await term.run("KEPT=value-$((20+21))", b"# ")
        await term.run("echo $KEPT", b"value-41")
        offset = len(term.output)
        await term.drop()
        again = Term(running, cookie, await aticket(operator, running, session=session), query=f"&since={offset}")
        assert await again.connect()
        status = await again.opened()
        assert status["resumed"] and status["session"] == session and not status["reset"]
        await again.run("echo again-$KEPT", b"again-value-41")
        await again.send_text({"type": "close"})
        await again.wait_closed()

    asyncio.run(scenario())
    from webui.models import AuditEntry

    assert AuditEntry.objects.filter(action="console.resume", path=f"/ct/{running}").exists()


def test_closed_socket_leaves_no_process_after_grace(running, operator, engine):
    cookie = login_cookie(operator)
    init = init_pid(engine, running)
    before = container_pids(init)

    async def scenario():
        term = Term(running, cookie, await aticket(operator, running))
        assert await term.connect()
        session = (await term.opened())["session"]
        await term.run("sleep 1000 & sleep 1001 & echo started-$((2*3))", b"started-6")
        assert len(container_pids(init) - before) >= 3  # the shell and its two jobs
        await term.drop()
        return session

    session = asyncio.run(scenario())
    assert len(container_pids(init) - before) >= 3  # kept during the grace period
    wait_until(lambda: container_pids(init) == before, timeout=CONSOLE_GRACE + 10, what="every process gone")

    async def late():  # the session is gone for good
        term = Term(running, cookie, await aticket(operator, running, session=session))
        assert await term.connect()
        await term.wait_closed()
        assert "no longer exists" in term.errors()[-1]["message"]

    asyncio.run(late())


def test_flood_while_the_container_stops(engine, busybox_template, ctid_factory, node, console_relay, operator):
    flooded, other = ctid_factory(), ctid_factory()
    for ctid in (flooded, other):
        engine.create(ctid, busybox_template, {"hostname": f"bb{ctid}", "memory": "128", "swap": "0"})
        engine.start(ctid)
        mirror(node, ctid, engine=engine)
    cookie = login_cookie(operator)

    async def scenario():
        calm = Term(other, cookie, await aticket(operator, other))
        assert await calm.connect()
        await calm.opened()
        term = Term(flooded, cookie, await aticket(operator, flooded))
        assert await term.connect()
        await term.opened()
        await term.run("cat > /dev/null", b"cat")
        stopper = threading.Thread(target=engine.stop, args=(flooded,))
        chunk = os.urandom(32 * 1024)
        for index in range(200):
            if index == 20:
                stopper.start()
            while await term.pump(0.001):
                pass
            if term.closed is not None or term.com.future.done():
                break
            await term.com.send_to(bytes_data=chunk)
        if stopper.ident is None:  # the flood ended the session first (the relay did not keep up: a busy host)
            stopper.start()
        await asyncio.get_running_loop().run_in_executor(None, stopper.join)
        await term.wait_closed(20)
        assert any(c["type"] in ("exit", "error") for c in term.controls)
        await calm.run("echo calm-$((5*5))", b"calm-25")
        await calm.send_text({"type": "close"})
        await calm.wait_closed()

    asyncio.run(scenario())
    assert engine.status(flooded, stats=False).status == "stopped"
    assert engine.status(other, stats=False).status == "running"


def test_console_on_a_container_being_destroyed(engine, busybox_template, ctid_factory, node, console_relay, make_user):
    ctid = ctid_factory()
    # console: 0: no /dev/console is held, so console mode follows the log read-only
    engine.create(ctid, busybox_template, {"hostname": f"bb{ctid}", "memory": "128", "swap": "0", "console": "0"})
    engine.start(ctid)
    mirror(node, ctid, engine=engine)
    operator = make_user("carl", "ContainerAdmin", "/")  # VM.Config: a mode other than the container's cmode
    cookie = login_cookie(operator)

    async def scenario():
        shell = Term(ctid, cookie, await aticket(operator, ctid))
        log = Term(ctid, cookie, await aticket(operator, ctid, mode="console"))
        for term in (shell, log):
            assert await term.connect()
        assert (await log.opened())["readonly"]
        await log.until(lambda t: b"read-only" in t.output, what="the read-only banner")
        await log.com.send_to(bytes_data=b"typed")
        await log.until(lambda t: any("read-only" in e["message"] for e in t.errors()), what="read-only notice")
        await shell.opened()
        await shell.run("echo alive-$((7*6))", b"alive-42")
        await asyncio.get_running_loop().run_in_executor(None, lambda: engine.destroy(ctid, force=True))
        for term in (shell, log):
            assert await term.wait_closed(20) == 1000
            assert term.controls[-1]["type"] == "exit"
        assert log.controls[-1]["reason"] == "destroyed"

    asyncio.run(scenario())


def test_default_cmode_gives_a_console_user_a_login_not_a_shell(engine, running, node, operator, make_user):
    """cmode absent (Proxmox's default, tty): VM.Console gets the container's login prompt; a shell, or the
    console output, needs VM.Config; a VM.Config holder may ask for a shell."""
    from webui.models import AuditEntry

    mirror(node, running, cmode=None, engine=engine)
    admin = make_user("carl", "ContainerAdmin", f"/ct/{running}")
    client = Client()
    client.force_login(operator)
    for mode in ("shell", "console"):
        answer = client.post(f"/ct/{running}/console/ticket", {"mode": mode})
        assert answer.status_code == 403, answer.content
        assert "VM.Config" in answer.json()["error"]["message"] and "tty" in answer.json()["error"]["message"]
    assert AuditEntry.objects.filter(username="olga", action="denied VM.Config", outcome="denied").count() == 2
    page = client.get(f"/ct/{running}/console/term/")
    assert page.status_code == 200
    assert b'value="tty"' in page.content and b'value="shell"' not in page.content
    cookie, admin_cookie = login_cookie(operator), login_cookie(admin)

    async def scenario():
        term = Term(running, cookie, await aticket(operator, running))
        assert await term.connect()
        assert (await term.opened())["mode"] == "tty"
        await term.until(lambda t: f"bb{running} login:".encode() in t.output, what="the login prompt")
        await term.run("root", b"Password:")  # a login, not a passwordless root shell
        await term.com.send_to(bytes_data=b"wrong\recho pwned-$((40+2))\r")
        await term.wait_closed(20)  # busybox's login refuses (this root has no password) and exits
        assert b"pwned-42" not in term.output
        shell = Term(running, admin_cookie, await aticket(admin, running, mode="shell"))
        assert await shell.connect()
        assert (await shell.opened())["mode"] == "shell"
        await shell.run("id -u; echo root-$((40+2))", b"root-42")
        await shell.send_text({"type": "close"})
        await shell.wait_closed()

    asyncio.run(scenario())


def test_mode_is_checked_again_when_the_socket_opens(engine, running, node, operator):
    """A shell ticket issued while cmode was shell opens no shell once cmode went back to tty."""
    token = ticket(operator, running, mode="shell")
    cookie = login_cookie(operator)
    mirror(node, running, cmode="tty", engine=engine)

    async def scenario():
        term = Term(running, cookie, token)
        assert await term.connect()
        assert await term.wait_closed() == 4403
        assert "needs VM.Config" in term.errors()[0]["message"]

    asyncio.run(scenario())


def test_cmode_shell_gives_a_console_user_a_shell_and_nothing_else(running, operator):
    cookie = login_cookie(operator)
    client = Client()
    client.force_login(operator)
    assert client.post(f"/ct/{running}/console/ticket", {"mode": "tty"}).status_code == 403

    async def scenario():
        term = Term(running, cookie, await aticket(operator, running))
        assert await term.connect()
        assert (await term.opened())["mode"] == "shell"
        await term.run("echo shell-$((6*7))", b"shell-42")
        await term.send_text({"type": "close"})
        await term.wait_closed()

    asyncio.run(scenario())


def test_stopped_container_says_so(engine, busybox_template, ctid_factory, node, console_relay, operator):
    ctid = ctid_factory()
    engine.create(ctid, busybox_template, {"hostname": f"bb{ctid}", "memory": "128", "swap": "0"})
    mirror(node, ctid, status="stopped", engine=engine)
    cookie = login_cookie(operator)

    async def scenario():
        term = Term(ctid, cookie, await aticket(operator, ctid))
        assert await term.connect()
        assert await term.wait_closed() == 4409
        error = term.errors()[-1]
        assert error["stopped"] and "not running" in error["message"]

    asyncio.run(scenario())
