"""Frames to the browser, sent in order by one writer task per console socket.

A browser that reads slowly then holds up neither the relay's messages nor
the user's input and close: they only queue a frame here. A send returns
once the server took the frame (uvicorn waits while its transport is above
its high-water mark); what is queued or in a send that has not returned is
``pending``, which the consumer weighs before acknowledging output to the
relay.
"""

from __future__ import annotations

import asyncio
import collections
import json

from tasks.console_protocol import trace_stamp, trace_write


class Outbox:
    """``send(bytes_data=|text_data=)`` and ``close(code)`` are the socket's own; ``taken(size)`` is awaited
    after each output frame the server took."""

    def __init__(self, send, close, taken):
        self.send, self.close, self.taken = send, close, taken
        self.queue: collections.deque = collections.deque()
        self.pending = 0  # output bytes queued or in a send not yet returned
        self.peak = 0  # the most ``pending`` has been
        self.has_mail = asyncio.Event()
        self.writer = asyncio.ensure_future(self._write())

    def put(self, item) -> None:
        """Queue a frame (bytes: output; dict: control; int: close with that code), or a list: the trace
        (``tasks.console_protocol``) of the output queued before it, finished once that output was taken."""
        self.queue.append(item)
        if isinstance(item, bytes):
            self.pending += len(item)
            self.peak = max(self.peak, self.pending)
        self.has_mail.set()

    def drop(self) -> None:
        """Forget what is queued (output that is no longer the user's to see)."""
        self.queue.clear()
        self.pending = 0

    def stop(self) -> None:
        self.writer.cancel()

    async def _write(self) -> None:
        try:
            await self._write_queue()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the client went away mid-send; disconnect() follows
            self.queue.clear()

    async def _write_queue(self) -> None:
        while True:
            await self.has_mail.wait()
            self.has_mail.clear()
            while self.queue:
                item = self.queue.popleft()
                if isinstance(item, bytes):
                    await self.send(bytes_data=item)
                    self.pending = max(0, self.pending - len(item))
                    await self.taken(len(item))
                elif isinstance(item, list):
                    trace_stamp(item, "socket_took")
                    trace_write(item)
                elif isinstance(item, dict):
                    await self.send(text_data=json.dumps(item))
                else:
                    await self.close(item)
                    return
