"""Consoles and live sockets end at once when the user's login or access ends; a slow browser holds output back.

Real path as in test_console_ws.py: the ASGI application, the Redis channel layer, the node's console
relay and a busybox container. Logout, revocation and deactivation reach the sockets through the
channel-layer group ``user.<id>`` (webui.signals), not through the consumers' periodic check.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket

import pytest
from django.test import Client

from tests.webui.console_kit import ORIGIN, Term, aticket, container_pids, login_cookie, mirror, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

# Well under the consumers' periodic check (10 s): the push, not the backstop, ends the socket.
PROMPT = 5.0


@pytest.fixture
def running(engine, container, node, console_relay):
    mirror(node, container, engine=engine)
    return container


def init_pid(engine, ctid: int) -> int:
    return engine.status(ctid, stats=False).pid


def test_logout_ends_the_console_of_that_login(running, make_user, engine):
    user = make_user("lena", "Operator", "/")
    browser = Client()
    browser.force_login(user)
    cookie = f"sessionid={browser.cookies['sessionid'].value}".encode()
    other_login = login_cookie(user)  # the same user in another browser keeps its console
    init = init_pid(engine, running)
    before = container_pids(init)

    async def scenario():
        kept = Term(running, other_login, await aticket(user, running))
        term = Term(running, cookie, await aticket(user, running))
        for t in (kept, term):
            assert await t.connect()
            await t.opened()
        await kept.run("echo kept-$((1+1))", b"kept-2")
        await term.run("sleep 1000 & echo bg-$((2+2))", b"bg-4")
        answer = await asyncio.get_running_loop().run_in_executor(None, lambda: browser.post("/logout/"))
        assert answer.status_code == 302
        assert await term.wait_closed(PROMPT) == 4401
        assert "your session ended" in term.errors()[-1]["message"]
        await kept.run("echo still-$((3+3))", b"still-6")
        await kept.send_text({"type": "close"})
        await kept.wait_closed()

    asyncio.run(scenario())
    wait_until(lambda: container_pids(init) == before, timeout=PROMPT, what="every process of the console gone")


def test_revoking_a_role_closes_that_users_console_only(running, make_user, engine):
    from webui.models import AccessEntry, AuditEntry

    olga, otto = make_user("olga", "Operator", "/"), make_user("otto", "Operator", "/")
    init = init_pid(engine, running)
    olga_cookie, otto_cookie = login_cookie(olga), login_cookie(otto)

    async def scenario():
        theirs = Term(running, otto_cookie, await aticket(otto, running))
        assert await theirs.connect()
        await theirs.opened()
        await theirs.run("echo otto-$((4+4))", b"otto-8")
        with_otto = container_pids(init)
        term = Term(running, olga_cookie, await aticket(olga, running))
        assert await term.connect()
        await term.opened()
        await term.run("sleep 1000 & echo olga-$((5+5))", b"olga-10")
        await asyncio.get_running_loop().run_in_executor(None, AccessEntry.objects.filter(user=olga).delete)
        assert await term.wait_closed(PROMPT) == 4403
        error = term.errors()[-1]
        assert error["fatal"] and f"your access to CT {running} was revoked" in error["message"]
        await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: wait_until(
                lambda: container_pids(init) == with_otto, timeout=PROMPT, what="olga's shell and its job gone"
            ),
        )
        await theirs.run("echo otto-again-$((6+6))", b"otto-again-12")
        await theirs.send_text({"type": "close"})
        await theirs.wait_closed()

    asyncio.run(scenario())
    assert AuditEntry.objects.filter(username="olga", action="console.close", outcome="denied").exists()


def test_deactivating_a_user_closes_their_console(running, make_user):
    vera = make_user("vera", "Operator", "/")
    cookie = login_cookie(vera)

    async def scenario():
        term = Term(running, cookie, await aticket(vera, running))
        assert await term.connect()
        await term.opened()

        def deactivate():
            vera.is_active = False
            vera.save()

        await asyncio.get_running_loop().run_in_executor(None, deactivate)
        assert await term.wait_closed(PROMPT) == 4403
        assert "revoked" in term.errors()[-1]["message"]

    asyncio.run(scenario())


class Live:
    def __init__(self, cookie: bytes):
        from channels.testing import WebsocketCommunicator

        from webui.asgi import application

        headers = [(b"origin", ORIGIN), (b"cookie", cookie), (b"host", b"127.0.0.1")]
        self.com = WebsocketCommunicator(application, "/ws/live/", headers=headers)

    async def next(self, timeout: float = PROMPT) -> dict:
        message = await asyncio.wait_for(self.com.output_queue.get(), timeout)
        assert message["type"] == "websocket.send", message
        return json.loads(message["text"])


def test_live_socket_leaves_a_container_whose_audit_was_revoked(running, make_user, roles):
    from asgiref.sync import sync_to_async
    from channels.layers import get_channel_layer

    from webui.models import AccessEntry

    audrey = make_user("audrey", "Auditor", f"/ct/{running}")
    AccessEntry.objects.create(user=audrey, role=roles["Auditor"], path="/nodes/elsewhere")
    layer = get_channel_layer()
    cookie = login_cookie(audrey)

    async def publish(group: str, mark: str) -> None:
        await layer.group_send(group, {"type": "live.event", "event": {"type": "mark", "mark": mark}})

    async def scenario():
        live = Live(cookie)
        connected, _ = await live.com.connect(timeout=10)
        assert connected
        await live.com.send_to(text_data=json.dumps({"subscribe": [f"ct/{running}", "node/elsewhere"]}))
        assert (await live.next())["groups"] == sorted([f"ct.{running}", "node.elsewhere"])
        await publish(f"ct.{running}", "before")
        assert (await live.next())["mark"] == "before"
        await sync_to_async(AccessEntry.objects.filter(user=audrey, path=f"/ct/{running}").delete)()
        dropped = await live.next()
        assert dropped["type"] == "unsubscribed" and dropped["groups"] == [f"ct.{running}"]
        # One channel, in order: had the container's event still arrived, it would come before the node's.
        await publish(f"ct.{running}", "after")
        await publish("node.elsewhere", "node")
        assert (await live.next())["mark"] == "node"
        assert live.com.output_queue.empty()
        await live.com.disconnect()

    asyncio.run(scenario())


def test_slow_browser_holds_output_back_in_order(web, running, make_user):
    """Through uvicorn: a client that stops reading during a large output stalls the program, not memory."""
    from websockets.asyncio.client import connect

    from tasks.console_protocol import CHUNK, WINDOW
    from webui.console.relay_client import HIGH_WATER

    user = make_user("sam", "Operator", "/")
    cookie = login_cookie(user).decode()
    count = 1_000_000  # about 7 MB of lines: more than the kernel's socket buffers hold
    port = int(web.rsplit(":", 1)[1])

    async def scenario():
        token = await aticket(user, running)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # a small window: the server feels it
        sock.connect(("127.0.0.1", port))
        async with connect(
            f"ws://127.0.0.1:{port}/ws/console/{running}/?ticket={token}",
            sock=sock,
            additional_headers={"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"},
            max_queue=1,
            max_size=1 << 20,
        ) as ws:
            output, controls = bytearray(), []

            async def read_until(check, timeout: float = 30.0) -> None:
                async with asyncio.timeout(timeout):
                    while not check():
                        frame = await ws.recv()
                        if isinstance(frame, bytes):
                            output.extend(frame)
                        else:
                            controls.append(json.loads(frame))

            await read_until(lambda: any(c["type"] == "status" for c in controls))
            await ws.send(b"stty -echo; seq 1 %d; echo END-$((20+22))\r" % count)
            await asyncio.sleep(2)  # not reading: the server's writes back up
            await read_until(lambda: b"END-42" in output, timeout=60)
            await ws.send(json.dumps({"type": "flow"}))
            await read_until(lambda: any(c["type"] == "flow" for c in controls))
            flow = next(c for c in controls if c["type"] == "flow")
            await ws.send(json.dumps({"type": "close"}))
            return bytes(output), flow

    output, flow = asyncio.run(scenario())
    numbers = re.findall(rb"^(\d+)\r$", output, re.M)
    assert numbers == [str(n).encode() for n in range(1, count + 1)]  # every line, once, in order
    assert flow["high_water"] == HIGH_WATER
    assert 0 < flow["peak"] <= WINDOW + CHUNK, flow  # what waited in the web process for the browser
    assert flow["pending"] == 0 and flow["written"] == flow["offset"]
