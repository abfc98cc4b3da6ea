"""The web side's end of a console session's talk with the node's relay, over the channel layer.

A consumer holds one ``RelayClient``: it sends to the relay of the container's
node (``tasks.console_protocol.relay_channel``), holding input typed before
the relay answered, and counts the session's output so that it can tell a
stream that does not follow on and acknowledge what the browser took.
"""

from __future__ import annotations

import asyncio

from channels.exceptions import ChannelFull

from tasks.console_protocol import ACK_EVERY, relay_channel

OPEN_TIMEOUT = 10.0  # seconds the relay has to answer an open or attach
EARLY_INPUT = 64 * 1024  # input typed before the relay answered, kept until it does
# Output handed to the socket but not yet taken by the server (its send has not returned: the
# browser reads slowly). Above this, relay output is no longer acknowledged, so the relay's window
# fills and the pty pauses; the relay never sends past the window, so this holds at most
# WINDOW + CHUNK bytes per console.
HIGH_WATER = 256 * 1024


class OutOfOrder(Exception):
    """Output whose offset does not follow on: the relay never skips or reorders, so the stream is corrupt."""


class RelayClient:
    """Messages to one node's relay for one session, and the count of that session's output.

    ``stuck`` is awaited when a message that matters could not be sent (the relay's channel stayed full
    for ``OPEN_TIMEOUT``): the consumer ends the session then.
    """

    def __init__(self, layer, reply: str, node: str, session: str, stuck):
        self.layer, self.reply, self.node, self.session, self.stuck = layer, reply, node, session, stuck
        self.channel = relay_channel(node)
        self.opened = False  # the relay answered the open or attach
        self.offset = 0  # output bytes the browser has been sent in this session
        self.written = 0  # output offset the server has taken
        self.acked = 0  # output offset acknowledged to the relay
        self.early: list[bytes] = []

    async def send(self, message: dict, quiet: bool = False) -> bool:
        """Send to the node's relay, waiting while its channel is full (so a flood slows the browser down)."""
        message = {**message, "session": self.session, "reply": self.reply}
        delay, waited = 0.005, 0.0
        while True:
            try:
                await self.layer.send(self.channel, message)
                return True
            except ChannelFull:
                if waited > OPEN_TIMEOUT:
                    break
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 0.2)
        if not quiet:
            await self.stuck()
        return False

    async def open(
        self,
        ctid: int,
        mode: str,
        user: int,
        cols: int,
        rows: int,
        since: int | None,
        resuming: bool,
        shell: str | None = None,
    ) -> bool:
        """Ask for a new terminal, or (``resuming``) to take the kept session over from byte ``since``."""
        return await self.send(
            {
                "type": "console.attach" if resuming else "console.open",
                "ctid": ctid,
                "mode": mode,
                "user": user,
                "cols": cols,
                "rows": rows,
                "since": since if resuming else None,
                "shell": shell if mode == "shell" else None,
            }
        )

    async def input(self, data: bytes, trace: list | None = None) -> None:
        """Terminal input; before the relay answered it is kept (up to ``EARLY_INPUT``, then dropped).
        ``trace``: ``tasks.console_protocol``'s trace, when tracing is on."""
        if self.opened:
            message = {"type": "console.input", "data": data}
            if trace is not None:
                message["trace"] = trace
            await self.send(message)
        elif sum(map(len, self.early)) + len(data) <= EARLY_INPUT:
            self.early.append(data)

    async def opened_at(self, offset: int) -> None:
        """The relay answered: its output starts at ``offset``; the input kept meanwhile goes now."""
        self.opened = True
        self.offset = self.acked = self.written = offset
        for data in self.early:
            await self.send({"type": "console.input", "data": data})
        self.early = []

    def output(self, message: dict) -> bytes:
        """The bytes of a ``console.output``, counted; ``OutOfOrder`` if its offset does not follow on."""
        offset, data = message["offset"], message["data"]
        if offset != self.offset:
            raise OutOfOrder(f"console output out of order (expected byte {self.offset}, got {offset})")
        self.offset += len(data)
        return data

    async def taken(self, size: int, pending: int, ack: bool) -> None:
        """The server took ``size`` output bytes; acknowledge them (if ``ack``) once enough have gathered and
        little is ``pending`` in the socket, so that a browser that reads slowly pauses the program."""
        self.written += size
        if ack and self.written - self.acked >= ACK_EVERY and pending <= HIGH_WATER:
            self.acked = self.written
            await self.send({"type": "console.ack", "offset": self.written}, quiet=True)
