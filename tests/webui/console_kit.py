"""What the console tests share: a running container mirrored into the database, tickets, a socket client."""

from __future__ import annotations

import asyncio
import json
import os
import time

from django.test import Client

ORIGIN = b"http://127.0.0.1"


def mirror(node, ctid: int, status: str = "running", cmode: str | None = "shell", engine=None):
    """The container's row on ``node``. ``cmode`` (default ``shell``, so an Operator gets a shell as most of
    these tests need; None for the default, a login) is written to the engine's config too when ``engine``
    is given, so an agent's resync does not take it back."""
    from webui.models import Container

    config = {"cmode": cmode} if cmode else {}
    if engine is not None and engine.exists(ctid):
        if cmode:
            engine.set(ctid, {"cmode": cmode})
        else:
            engine.set(ctid, delete=["cmode"])
        config = dict(engine.config(ctid).current.values)
    return Container.objects.update_or_create(
        ctid=ctid, defaults={"node": node, "status": status, "hostname": f"bb{ctid}", "config": config}
    )[0]


def login_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def ticket(user, ctid: int, mode: str = "", session: str = "") -> str:
    """A console ticket; no ``mode``: the container's cmode."""
    client = Client()
    client.force_login(user)
    answer = client.post(f"/ct/{ctid}/console/ticket", {"mode": mode, "session": session})
    assert answer.status_code == 200, answer.content
    return answer.json()["ticket"]


async def aticket(user, ctid: int, mode: str = "", session: str = "") -> str:
    """``ticket`` from inside a test's event loop."""
    from asgiref.sync import sync_to_async

    return await sync_to_async(ticket)(user, ctid, mode, session)


def container_pids(init_pid: int) -> set[int]:
    """Host pids of the processes in the pid namespace of a container's init."""
    ns = os.stat(f"/proc/{init_pid}/ns/pid").st_ino
    found = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}/ns/pid").st_ino == ns:
                    found.add(int(name))
            except OSError:
                pass
    return found


def wait_until(check, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout:g} s")


class Term:
    """A console socket through the real ASGI application, the channel layer and the node's relay."""

    def __init__(self, ctid: int, cookie: bytes, token: str, origin: bytes = ORIGIN, query: str = ""):
        from channels.testing import WebsocketCommunicator

        from webui.asgi import application

        headers = [(b"origin", origin), (b"cookie", cookie), (b"host", b"127.0.0.1")]
        self.com = WebsocketCommunicator(application, f"/ws/console/{ctid}/?ticket={token}{query}", headers=headers)
        self.output = bytearray()
        self.controls: list[dict] = []
        self.closed: int | None = None

    async def connect(self) -> bool:
        connected, _ = await self.com.connect(timeout=10)
        return connected

    async def pump(self, timeout: float = 0.5) -> bool:
        """Take one message; False when none came within ``timeout`` or the socket closed."""
        if self.closed is not None:
            return False
        try:
            # Not receive_output(): its timeout cancels the application, this one only the wait.
            message = await asyncio.wait_for(self.com.output_queue.get(), timeout)
        except TimeoutError:
            if self.com.future.done():
                self.com.future.result()  # the consumer's own exception, if it died of one
                self.closed = -1
            return False
        if message["type"] == "websocket.close":
            self.closed = message.get("code", 1000)
            return False
        if message.get("bytes") is not None:
            self.output += message["bytes"]
        elif message.get("text") is not None:
            self.controls.append(json.loads(message["text"]))
        return True

    async def until(self, predicate, timeout: float = 15.0, what: str = "output") -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if self.closed is not None:
                raise AssertionError(
                    f"socket closed ({self.closed}) before {what}; controls {self.controls}, "
                    f"output {bytes(self.output[-400:])!r}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {what} within {timeout:g} s; controls {self.controls}, output {bytes(self.output[-400:])!r}"
                )
            await self.pump(0.5)

    async def opened(self) -> dict:
        await self.until(lambda t: any(c["type"] == "status" for c in t.controls), what="status")
        return next(c for c in self.controls if c["type"] == "status")

    async def run(self, line: str, expect: bytes, timeout: float = 15.0) -> None:
        await self.com.send_to(bytes_data=line.encode() + b"\r")
        await self.until(lambda t: expect in t.output, timeout, what=repr(expect))

    async def send_text(self, payload) -> None:
        await self.com.send_to(text_data=payload if isinstance(payload, str) else json.dumps(payload))

    async def wait_closed(self, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while self.closed is None and time.monotonic() < deadline:
            await self.pump(0.5)
        assert self.closed is not None, f"socket still open; controls {self.controls}"
        return self.closed

    def errors(self) -> list[dict]:
        return [c for c in self.controls if c["type"] == "error"]

    async def drop(self) -> None:
        await self.com.disconnect()
