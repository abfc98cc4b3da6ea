"""The channel layer's one-script send and receive keep channels_redis's behaviour (real Redis); unsigned
messages (upstream's, or anyone's without the installation's key) are dropped and logged."""

from __future__ import annotations

import asyncio

import pytest
from channels.exceptions import ChannelFull
from channels_redis.core import RedisChannelLayer as Upstream
from django.conf import settings

from webui.channel_layer import RedisChannelLayer


def _layers(**extra) -> tuple[RedisChannelLayer, Upstream]:
    config = {**settings.CHANNEL_LAYERS["default"]["CONFIG"], "prefix": "caisson-test-layer", **extra}
    unsigned = {key: value for key, value in config.items() if key != "signing_key"}
    return RedisChannelLayer(**config), Upstream(**unsigned)


def test_settings_use_it():
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"] == "webui.channel_layer.RedisChannelLayer"


def test_order_capacity_and_unsigned_senders_dropped(caplog):
    async def scenario():
        ours, theirs = _layers(capacity=3)
        try:
            general = "caisson.test.general"
            await ours.flush()
            for i in range(3):
                await ours.send(general, {"type": "m", "n": i, "data": b"\x00\xff"})
            with pytest.raises(ChannelFull):
                await ours.send(general, {"type": "m", "n": 3})
            assert [(await ours.receive(general))["n"] for _ in range(3)] == [0, 1, 2]

            # One receiver per channel, as in production (a relay per node channel, a web server per
            # process-local channel). An unsigned message (upstream's layer) is dropped, the next one taken.
            specific = await ours.new_channel()  # a consumer's own channel (process-local part)
            await theirs.send(specific, {"type": "a"})
            await ours.send(specific, {"type": "b", "data": b"\x00\xff"})
            assert await asyncio.wait_for(ours.receive(specific), 5) == {"type": "b", "data": b"\x00\xff"}

            later = asyncio.ensure_future(ours.receive(general))  # blocks until a message comes
            await asyncio.sleep(0.05)
            assert not later.done()
            await theirs.send(general, {"type": "forged"})
            await asyncio.sleep(0.3)
            assert not later.done()
            await ours.send(general, {"type": "late"})
            assert (await asyncio.wait_for(later, 5))["type"] == "late"
        finally:
            await ours.flush()
            await ours.close_pools()
            await theirs.close_pools()

    with caplog.at_level("WARNING", logger="caisson.channels"):
        asyncio.run(scenario())
    dropped = [r.getMessage() for r in caplog.records if "dropped a message" in r.getMessage()]
    assert len(dropped) == 2, dropped
