"""The relay's process: the node's sessions, the messages of its channel, start-up and signals.

``serve`` receives on the node's channel (``console.<node>``) and hands each
message to ``Relay.handle``, which checks it and passes it to its session
(``tasks.console_relay.relay.Session``). Messages come through the
installation's channel layer (``CHANNEL_LAYERS`` in the settings), which
drops any whose HMAC, time or nonce is wrong before they get here. SIGTERM
and SIGINT end every session (processes included) and then the process.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time

from tasks.console_protocol import (
    KEEPALIVE,
    MODES,
    STALE,
    error,
    is_count,
    is_session_id,
    is_shell,
    is_size,
    relay_channel,
)
from tasks.console_relay.relay import Session

log = logging.getLogger("caisson.console")


def grace_seconds() -> float:
    from django.conf import settings

    return float(getattr(settings, "CAISSON_CONSOLE_GRACE", 30))


class Relay:
    """The node's console sessions by id, and what the consumers' messages do to them."""

    def __init__(self, layer, engine, grace: float):
        self.layer, self.engine, self.grace = layer, engine, grace
        self.sessions: dict[str, Session] = {}
        self.tasks: set[asyncio.Task] = set()

    def spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def send(self, channel: str, message: dict, still_wanted=lambda: True) -> bool:
        """Send, waiting while the channel is full (never dropping); False if no longer wanted or gone."""
        from channels.exceptions import ChannelFull

        delay = 0.005
        while still_wanted():
            try:
                await self.layer.send(channel, message)
                return True
            except ChannelFull:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)
        return False

    async def refuse(self, reply, sid, text: str) -> None:
        """A fatal `console.error` to the consumer, if it named a channel to answer on."""
        if isinstance(reply, str) and reply:
            await self.send(reply, error(sid, text))

    async def handle(self, message: dict) -> None:
        kind = message.get("type")
        sid = message.get("session")
        reply = message.get("reply")
        session = self.sessions.get(sid) if isinstance(sid, str) else None
        if kind == "console.open":
            await self.open(message)
        elif kind == "console.attach":
            if (
                session is None
                or session.ended
                or session.ctid != message.get("ctid")
                or session.user != message.get("user")
                or session.mode != message.get("mode")
            ):
                if isinstance(reply, str) and reply:
                    await self.send(
                        reply,
                        error(
                            sid,
                            "that console session no longer exists (it ended or its "
                            "grace period ran out); open a new one",
                            gone=True,
                        ),
                    )
                return
            await session.attach(reply, _int(message.get("since")), *_size(message), resumed=True)
        elif session is None:
            if kind in ("console.input", "console.resize", "console.keepalive"):
                await self.refuse(reply, sid, "that console session has ended")
        elif kind == "console.input":
            if reply == session.reply and isinstance(message.get("data"), bytes):
                session.last_seen = time.monotonic()
                await session.input(message["data"], message.get("trace"))
        elif kind == "console.resize":
            if reply == session.reply:
                session.resize(*_size(message))
        elif kind == "console.ack":
            if reply == session.reply:
                session.last_seen = time.monotonic()
                session.ack(message.get("offset"))
        elif kind == "console.keepalive":
            if reply == session.reply:
                session.last_seen = time.monotonic()
        elif kind == "console.detach":
            session.detach(reply)
        elif kind == "console.close":
            if reply == session.reply or session.reply is None:
                session.reply = None  # it closed on purpose: nothing more to tell it
                await session.end("closed")

    async def open(self, message: dict) -> None:
        from engine.errors import EngineError, InvalidState

        sid, reply, mode = message.get("session"), message.get("reply"), message.get("mode")
        ctid, user, shell = message.get("ctid"), message.get("user"), message.get("shell")
        if (
            not (
                is_session_id(sid)
                and isinstance(reply, str)
                and mode in MODES
                and isinstance(ctid, int)
                and isinstance(user, int)
                and is_shell(shell)
            )
            or sid in self.sessions
        ):
            await self.refuse(reply, sid, "malformed console request")
            return
        session = Session(self, sid, ctid, mode, user, shell)
        cols, rows = _size(message)
        try:
            if mode == "console":
                session.start_console(cols, rows)
            else:
                session.start_terminal(cols, rows)
        except FileNotFoundError:
            await self.refuse(reply, sid, f"CT {ctid} has no console log yet: it has never been started")
            return
        except InvalidState as exc:  # not running: the page offers to start it
            await self.send(reply, error(sid, str(exc), stopped=True))
            return
        except EngineError as exc:
            await self.refuse(reply, sid, str(exc))
            return
        except OSError as exc:
            await self.refuse(reply, sid, f"cannot open a terminal in CT {ctid}: {exc.strerror or exc}")
            return
        self.sessions[sid] = session
        log.info("console session %s opened (CT %s, %s, user %s)", sid, ctid, mode, user)
        await session.attach(reply, 0, cols, rows, resumed=False)
        session.pump = self.spawn(session.run_pump())

    async def sweep(self) -> None:
        """Detach sessions whose consumer went silent (its web server died without a word)."""
        while True:
            await asyncio.sleep(KEEPALIVE / 2)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if session.reply is not None and now - session.last_seen > STALE:
                    log.info("console session %s: its socket went silent; detached", session.sid)
                    session.detach()

    async def shutdown(self) -> None:
        for session in list(self.sessions.values()):
            session.reply = None
            await session.end("the console relay stopped")


def _int(value) -> int | None:
    return value if is_count(value) and value >= 0 else None


def _size(message: dict) -> tuple[int, int]:
    """(cols, rows) within 1..1000; the consumer refuses others, this only guards the ioctl."""
    cols, rows = message.get("cols"), message.get("rows")
    return (cols if is_size(cols) else 80), (rows if is_size(rows) else 24)


async def serve(node: str) -> None:
    from channels.layers import get_channel_layer

    from engine.lifecycle import Engine

    layer = get_channel_layer()
    relay = Relay(layer, Engine(), grace_seconds())
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    channel = relay_channel(node)
    relay.spawn(relay.sweep())
    log.info("console relay of node %s listening on %s (grace %g s)", node, channel, relay.grace)
    print(f"console relay ready on {channel}", flush=True)
    stopping = asyncio.ensure_future(stop.wait())
    dispatching = asyncio.ensure_future(dispatch(layer, relay, channel))
    try:
        await asyncio.wait({dispatching, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if dispatching.done():
            dispatching.result()  # it only ends by failing: say why
    finally:
        dispatching.cancel()
        stopping.cancel()
        await relay.shutdown()


async def dispatch(layer, relay: Relay, channel: str) -> None:
    """Hand the channel's messages to the relay, in order, one loop for the process's life.

    One receive per message, no task or wait per message: the layer pops the channel in batches and hands
    a batch's messages out from memory, so under many consoles typing a keystroke waits for no more than
    the handling of those ahead of it."""
    while True:
        message = await layer.receive(channel)
        try:
            await relay.handle(message)
        except Exception:  # noqa: BLE001 - one bad message must not stop every console of the node
            log.exception("console relay: message failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tasks.console_relay",
        description="this node's console relay, the privileged end of browser terminals",
    )
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("error: the console relay enters containers and needs root", file=sys.stderr)
        return 1
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webui.settings")
    import django

    django.setup()
    from django.conf import settings

    logging.basicConfig(level=args.loglevel, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(settings.CAISSON_NODE))
    return 0
