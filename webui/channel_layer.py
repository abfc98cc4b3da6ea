"""The channel layer: channels_redis's ``RedisChannelLayer`` with fewer Redis round trips per message.

Every console keystroke and every piece of console output crosses the layer
(consumer → node's relay → consumer), so its cost per message is the
console's latency floor. Upstream, ``send`` makes four round trips
(drop expired, count, add, set expiry) and ``receive`` three to four (put
back an unfinished backup, pop, back the message up, then clear the
backup). Here ``send`` is one Lua script doing the same four steps
atomically, and ``receive`` puts back the backup, pops a waiting message and
backs it up in one script too; only when the channel is empty does it block
(``BZPOPMIN``). Messages, keys, capacity, expiry and the
backup queue (a message popped by a receive that was cancelled is not lost)
are upstream's.

A process's own channels (``specific.<process>!…``: every console's and
live page's socket) share one Redis key that upstream drains one message per
round trip, plus a second round trip to clear the backup, one after the other
under one lock that its receivers pass around (two tasks and a wait per
receive): with 50 consoles typing, echoes queued behind it.  Here one pump
task per process (while any of its channels has a receiver) takes up to
``BATCH`` messages per ``BZMPOP``, one round trip that blocks only when the
key is empty, and puts each in its channel's queue, which its receiver
awaits. The pump belongs to no consumer, so a socket that closes cancels no
pop; a message is lost only if the process stops with a pop's answer on its
way (as with upstream, whose backup is written a round trip after the pop).

The node's console relay's named channel (one receiver: the relay) is
drained by a script that pops up to ``BATCH`` messages at once into the
backup; they are handed out from memory, and the next pop drops that backup
(or, if the receive that popped it was cancelled before it got the answer,
puts it back first).  When
the channel is empty the receiver blocks in one ``BZPOPMIN`` and returns what
it takes at once: upstream's round trips around it (put a backup back, then
back the popped message up) are left out, as the batch pop just dealt with the
backup and a message taken by a ``BZPOPMIN`` whose receive is cancelled is lost
with upstream's order too (it is in no backup until a second round trip).  A
message crossing an idle channel thus costs its receiver two round trips (the
blocking pop, then a batch pop finding nothing) instead of five.  A backup
left by a relay that died is dropped, not replayed, so a keystroke reaches a
shell at most once.

Every message is authenticated: ``C1``, the sender's time (ms), a random
nonce, then an HMAC-SHA256 (``signing_key``, from the installation's
secrets) over those and the msgpack body. A receiver drops, and logs, a
message whose HMAC is wrong, whose time is more than the layer's expiry (plus
a little clock skew) away from its own, or whose nonce it has already taken
within that window: only processes of this installation talk to the root
console relay, and a captured message replays at most into another process.
The nonce also keeps equal messages apart in Redis's sorted set (upstream's
random prefix).

A Redis restarted under the layer (its data gone: group memberships with it)
does not end the sockets: ``receive`` waits for Redis to answer again, with
backoff, then puts this process's channels back into the groups they had
joined, so an open live page keeps getting events.  Messages sent while
Redis was away are lost, as they would be with any broker restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import struct
import time
from collections import deque

from channels.exceptions import ChannelFull
from channels_redis.core import RedisChannelLayer as UpstreamRedisChannelLayer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("caisson.channels")

MAGIC = b"C1"
HEADER = struct.Struct(">2sQ16s32s")  # magic, time in ms, nonce, HMAC
SKEW = 10.0  # seconds of clock difference between hosts tolerated


class Rejected(Exception):
    """A message that failed the check; it is dropped."""


SEND = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
    return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""

POP = """
local backed_up = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = #backed_up, 1, -2 do
    redis.call('ZADD', KEYS[1], backed_up[i], backed_up[i - 1])
end
redis.call('DEL', KEYS[2])
local got = redis.call('ZPOPMIN', KEYS[1])
if got[1] then
    redis.call('ZADD', KEYS[2], got[2], got[1])
    return got[1]
end
return false
"""


BATCH = 64  # messages one pop takes off a process's shared channel

POP_MANY = """
if ARGV[2] == 'restore' then
    local backed_up = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
    for i = #backed_up, 1, -2 do
        redis.call('ZADD', KEYS[1], backed_up[i], backed_up[i - 1])
    end
end
redis.call('DEL', KEYS[2])
local got = redis.call('ZPOPMIN', KEYS[1], tonumber(ARGV[1]))
local members = {}
for i = 1, #got, 2 do
    redis.call('ZADD', KEYS[2], got[i + 1], got[i])
    members[#members + 1] = got[i]
end
return members
"""


class RedisChannelLayer(UpstreamRedisChannelLayer):
    def __init__(self, *args, signing_key: str | None = None, **kwargs):
        if not signing_key:
            raise ValueError("the channel layer needs a signing_key (CAISSON_SECRETS/channel.key)")
        kwargs["random_prefix_length"] = 0  # the nonce makes each message unique
        super().__init__(*args, **kwargs)
        self.signing_key = signing_key.encode()
        self.window = float(self.expiry) + SKEW
        self.seen: set[bytes] = set()
        self.seen_order: deque[tuple[float, bytes]] = deque()
        self.joined: dict[str, set[str]] = {}  # this process's channels per group, to rejoin after a restart
        self.rejoin_needed = False
        self.pending: dict[str, deque[bytes]] = {}  # popped in a batch, not yet handed out
        self.consumed: dict[str, bool] = {}  # the last batch reached this process: its backup may go
        self.named_locks: dict[str, asyncio.Lock] = {}
        self.outgoing: dict[tuple, list] = {}  # sends of this loop turn, per (loop, connection index), not yet flushed
        self.flushing: set[asyncio.Task] = set()
        self.pump: asyncio.Task | None = None  # fills receive_buffer from this process's shared channel
        self.local_receivers = 0  # receives waiting on this process's own channels

    def serialize(self, message) -> bytes:
        body = self._serializer.as_bytes(message)
        head = struct.pack(">2sQ16s", MAGIC, int(time.time() * 1000), os.urandom(16))
        return head + hmac.new(self.signing_key, head + body, hashlib.sha256).digest() + body

    def deserialize(self, message: bytes):
        if len(message) < HEADER.size:
            raise Rejected("too short to carry an HMAC")
        magic, millis, nonce, tag = HEADER.unpack_from(message)
        body = message[HEADER.size :]
        expected = hmac.new(self.signing_key, message[: HEADER.size - 32] + body, hashlib.sha256).digest()
        if magic != MAGIC or not hmac.compare_digest(tag, expected):
            raise Rejected("wrong or missing HMAC")
        now = time.time()
        if abs(now - millis / 1000) > self.window:
            raise Rejected(f"sent {now - millis / 1000:.0f} s ago, outside the {self.window:g} s window")
        while self.seen_order and self.seen_order[0][0] < now - 2 * self.window:
            self.seen.discard(self.seen_order.popleft()[1])
        if nonce in self.seen:
            raise Rejected("a replay (its nonce was already taken)")
        self.seen.add(nonce)
        self.seen_order.append((now, nonce))
        return self._serializer.from_bytes(body)

    async def group_add(self, group, channel):
        await super().group_add(group, channel)
        self.joined.setdefault(group, set()).add(channel)

    async def group_discard(self, group, channel):
        channels = self.joined.get(group, set())
        channels.discard(channel)
        if not channels:
            self.joined.pop(group, None)
        await super().group_discard(group, channel)

    async def receive(self, channel):
        """A process's own channel: from its queue, filled by the pump. A named one: upstream's. Either rides
        out a Redis that went away: retried with backoff, the groups rejoined first."""
        if "!" in channel:
            return await self._receive_local(channel)
        failures = 0
        while True:
            try:
                if self.rejoin_needed:
                    await self._rejoin()
                return await super().receive(channel)
            except (RedisConnectionError, RedisTimeoutError, ConnectionError) as exc:
                failures = await self._redis_away(exc, failures)

    async def _redis_away(self, exc: Exception, failures: int) -> int:
        """Wait a little longer each time Redis does not answer; the groups are rejoined once it does."""
        failures += 1
        self.rejoin_needed = True
        if failures == 1:
            log.warning("channel layer: Redis went away (%s); waiting for it", exc)
        await asyncio.sleep(min(2.0, 0.05 * 2**failures))
        return failures

    async def _receive_local(self, channel):
        assert self.require_valid_channel_name(channel)
        real = self.non_local_name(channel)
        assert real.endswith(self.client_prefix + "!"), "Wrong client prefix"
        loop = asyncio.get_running_loop()
        self.local_receivers += 1
        try:
            if self.pump is None or self.pump.done() or self.pump.get_loop().is_closed():
                if self.pump is not None and self.pump.get_loop() is not loop:
                    self.receive_buffer.clear()  # queues of a loop that ended
                self.pump = loop.create_task(self._pump(real))
            elif self.pump.get_loop() is not loop:
                raise RuntimeError("Two event loops are trying to receive() on one channel layer at once!")
            queue = self.receive_buffer[channel]
            try:
                return await queue.get()
            except asyncio.CancelledError:
                if queue.empty():
                    self.receive_buffer.pop(channel, None)
                raise
        finally:
            self.local_receivers -= 1

    async def _pump(self, real: str) -> None:
        """Move this process's messages from Redis to their channels' queues while any has a receiver."""
        key, index = self.prefix + real, self.consistent_hash(real)
        failures = 0
        while self.local_receivers > 0:
            try:
                if self.rejoin_needed:
                    await self._rejoin()
                got = await self.connection(index).execute_command(
                    "BZMPOP", self.brpop_timeout, 1, key, "MIN", "COUNT", BATCH
                )
                failures = 0
            except (RedisConnectionError, RedisTimeoutError, ConnectionError) as exc:
                failures = await self._redis_away(exc, failures)
                continue
            except Exception:  # noqa: BLE001 - the process's sockets must not lose their pump
                log.exception("channel layer: popping %s failed", key)
                failures = await self._redis_away(RuntimeError("pop failed"), failures)
                continue
            for member, _score in got[1] if got else ():
                try:
                    message = self.deserialize(member)
                except Rejected as exc:
                    log.warning("channel layer: dropped a message on %s: %s", real, exc)
                    continue
                targets = message.pop("__asgi_channel__", None)
                for target in targets if isinstance(targets, list) else [targets]:
                    if isinstance(target, str):
                        self.receive_buffer[target].put_nowait(message)

    async def close_pools(self):
        if self.pump is not None and not self.pump.done() and not self.pump.get_loop().is_closed():
            self.pump.cancel()
        self.pump = None
        await super().close_pools()

    async def _rejoin(self) -> None:
        for group, channels in list(self.joined.items()):
            for channel in list(channels):
                await super().group_add(group, channel)
        if self.rejoin_needed:
            log.warning("channel layer: Redis answers again; %d group(s) rejoined", len(self.joined))
        self.rejoin_needed = False

    async def receive_single(self, channel):
        """Upstream's for a named channel (a process's own channels never get here: ``receive`` takes them from
        the pump), drained in batches; messages that fail the check are skipped (and logged), gone from Redis."""
        lock = self.named_locks.setdefault(channel, asyncio.Lock())
        async with lock:  # a named channel (the node's console relay): one receiver at a time here
            return await self._receive_batched(channel)

    async def _receive_batched(self, channel):
        """One receiver per channel at a time (the caller's lock)."""
        pending = self.pending.setdefault(channel, deque())
        while True:
            while pending:
                try:
                    message = self.deserialize(pending.popleft())
                except Rejected as exc:
                    log.warning("channel layer: dropped a message on %s: %s", channel, exc)
                    continue
                return message.pop("__asgi_channel__", channel), message
            index = next(self._receive_index_generator)
            key = self.prefix + channel
            backup = self._backup_channel_name(key)
            connection = self.connection(index)
            # A backup this process never received (another process's, before it restarted) is dropped: for
            # console input at most once is right, a keystroke replayed into a shell is not.
            mode = "drop" if self.consumed.get(channel, True) else "restore"
            self.consumed[channel] = False  # until the answer is here: a cancelled pop is put back next time
            members = await connection.eval(POP_MANY, 2, key, backup, BATCH, mode)
            if not members:  # nothing waiting: block until a message comes (see the module's docstring)
                popped = await connection.bzpopmin(key, timeout=self.brpop_timeout)
                members = [] if popped is None else [popped[1]]
            pending.extend(members)
            self.consumed[channel] = True

    async def send(self, channel, message):
        """One SEND script per message, but the sends made in one turn of the event loop go to Redis together, in
        one pipelined round trip per connection (see ``_flush``); each still answers on its own (``ChannelFull``)."""
        assert isinstance(message, dict), "message is not a dict"
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        assert "__asgi_channel__" not in message
        key_name = channel
        if "!" in channel:
            message = {**message, "__asgi_channel__": channel}
            key_name = self.non_local_name(channel)
            index = self.consistent_hash(channel)
        else:
            index = next(self._send_index_generator)
        now = time.time()
        args = (
            self.prefix + key_name,
            int(now) - int(self.expiry),
            self.get_capacity(channel),
            now,
            self.serialize(message),
            int(self.expiry),
        )
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        queued = self.outgoing.setdefault((loop, index), [])  # sync callers each run a loop of their own
        queued.append((args, answer))
        if len(queued) == 1:
            loop.call_soon(self._start_flush, loop, index)
        if not await answer:
            raise ChannelFull()

    def _start_flush(self, loop, index: int) -> None:
        batch = self.outgoing.pop((loop, index), [])
        if batch:
            task = asyncio.ensure_future(self._flush(index, batch))
            self.flushing.add(task)
            task.add_done_callback(self.flushing.discard)

    async def _flush(self, index: int, batch: list) -> None:
        """The sends queued in one loop turn: one message alone is one EVAL, several are one pipeline."""
        try:
            connection = self.connection(index)
            if len(batch) == 1:
                results = [await connection.eval(SEND, 1, *batch[0][0])]
            else:
                async with connection.pipeline(transaction=False) as pipe:
                    for args, _ in batch:
                        pipe.eval(SEND, 1, *args)
                    results = await pipe.execute()
        except BaseException as exc:  # every sender hears of it, as each would have alone
            for _, answer in batch:
                if not answer.done():
                    answer.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
            if not isinstance(exc, Exception):
                raise
            return
        for (_, answer), added in zip(batch, results, strict=True):
            if not answer.done():
                answer.set_result(added)

    async def _brpop_with_clean(self, index, channel, timeout):
        connection = self.connection(index)
        member = await connection.eval(POP, 2, channel, self._backup_channel_name(channel))
        if member is not None:
            return member
        return await super()._brpop_with_clean(index, channel, timeout)
