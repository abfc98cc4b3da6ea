"""The channel layer: channels_redis's ``RedisChannelLayer`` with fewer Redis round trips per message.

Every console keystroke and every piece of console output crosses the layer
(consumer → node's relay → consumer), so its cost per message is the
console's latency floor. Upstream, ``send`` makes four round trips
(drop expired, count, add, set expiry) and ``receive`` three to four (put
back an unfinished backup, pop, back the message up, then clear the
backup). Here ``send`` is one Lua script doing the same four steps
atomically, and ``receive`` puts back the backup, pops a waiting message and
backs it up in one script too; only when the channel is empty does it fall
back to upstream's blocking pop. Messages, keys, capacity, expiry and the
backup queue (a message popped by a receive that was cancelled is not lost)
are upstream's, so both kinds of process interoperate.
"""
from __future__ import annotations

import time

from channels.exceptions import ChannelFull
from channels_redis.core import RedisChannelLayer as UpstreamRedisChannelLayer

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


class RedisChannelLayer(UpstreamRedisChannelLayer):
    async def send(self, channel, message):
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
        added = await self.connection(index).eval(
            SEND, 1, self.prefix + key_name, int(now) - int(self.expiry), self.get_capacity(channel), now,
            self.serialize(message), int(self.expiry))
        if not added:
            raise ChannelFull()

    async def _brpop_with_clean(self, index, channel, timeout):
        connection = self.connection(index)
        member = await connection.eval(POP, 2, channel, self._backup_channel_name(channel))
        if member is not None:
            return member
        return await super()._brpop_with_clean(index, channel, timeout)
