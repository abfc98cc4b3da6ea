"""Files between the web tier and a node's agent, through the broker's Redis: neither reads the other's disk.

The web server and a node need not share a host or a filesystem; what they always share is the broker
(every agent consumes its queue there).  A file travels as a Redis list of frames under a random stream id
(32 hex digits, unguessable; the key expires): ``D`` + up to ``CHUNK`` bytes of data, ``E`` at the end,
``X`` + a message when the sender failed.  The sender keeps at most ``WINDOW`` frames waiting, so a slow
reader holds at most ``WINDOW * CHUNK`` bytes in Redis, and gives up when nobody has read for ``IDLE``
seconds (the browser went away).  Both ends import this module (it is shared like ``webui.live``).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from typing import BinaryIO

CHUNK = 1 << 20
WINDOW = 8
IDLE = 60.0
EXPIRE = 600  # seconds a stream's key may outlive its last frame
STREAM_ID = re.compile(r"^[0-9a-f]{32}$")


class StreamError(Exception):
    """The other end failed or went away; the message says which."""


def _redis():
    import redis
    from django.conf import settings

    return redis.Redis.from_url(settings.CELERY_BROKER_URL)


def new_id() -> str:
    return secrets.token_hex(16)


def _key(stream_id: str) -> str:
    if not STREAM_ID.match(str(stream_id)):
        raise StreamError("not a stream id")
    return f"caisson:filestream:{stream_id}"


def send(stream_id: str, source: BinaryIO, cancelled=lambda: False) -> int:
    """Push ``source`` to the stream (the node's side of a download); returns the bytes sent."""
    conn, key, sent = _redis(), _key(stream_id), 0
    try:
        while True:
            data = source.read(CHUNK)
            _wait_for_room(conn, key, cancelled)
            if not data:
                conn.rpush(key, b"E")
                return sent
            conn.rpush(key, b"D" + data)
            conn.expire(key, EXPIRE)
            sent += len(data)
    except StreamError:
        raise
    except Exception as exc:
        conn.rpush(key, b"X" + str(exc).encode()[:500])
        conn.expire(key, EXPIRE)
        raise


def fail(stream_id: str, message: str) -> None:
    """Tell the reader the file will not come (a refused or failed job)."""
    conn, key = _redis(), _key(stream_id)
    conn.rpush(key, b"X" + message.encode()[:500])
    conn.expire(key, EXPIRE)


def _wait_for_room(conn, key: str, cancelled) -> None:
    idle_since = time.monotonic()
    last = conn.llen(key)
    while last >= WINDOW:
        if cancelled():
            raise StreamError("cancelled")
        time.sleep(0.02)
        now = conn.llen(key)
        if now < last:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > IDLE:
            conn.delete(key)
            raise StreamError(f"nobody read the stream for {IDLE:g} s (the download was abandoned)")
        last = now


def receive(stream_id: str, first_timeout: float = 120.0) -> Iterator[bytes]:
    """The stream's data as it comes (the web tier's side of a download); StreamError if the sender failed."""
    conn, key = _redis(), _key(stream_id)
    timeout = first_timeout
    try:
        while True:
            item = conn.blpop([key], timeout=int(timeout))
            if item is None:
                raise StreamError(f"the node sent nothing for {timeout:g} s")
            frame = item[1]
            if frame[:1] == b"E":
                return
            if frame[:1] == b"X":
                raise StreamError(frame[1:].decode(errors="replace"))
            timeout = IDLE
            yield frame[1:]
    finally:
        conn.delete(key)


# ---- uploads: the same frames the other way, with the node's confirmed offset -------------------------
# A resumable upload is a session (a Redis hash: node, name, size, user, and at the end sha256 or error)
# and a stream of frames the web tier pushes as the browser's chunks arrive.  The node's job appends them to
# a partial file and publishes how far the file is written (``offset``): that, not what the web tier has
# pushed, is where a client resumes.
def session_key(stream_id: str) -> str:
    return _key(stream_id) + ":session"


def save_session(stream_id: str, fields: dict) -> None:
    conn = _redis()
    conn.hset(session_key(stream_id), mapping={k: str(v) for k, v in fields.items()})
    conn.expire(session_key(stream_id), 24 * 3600)


def session(stream_id: str) -> dict[str, str]:
    raw = _redis().hgetall(session_key(stream_id))
    return {k.decode(): v.decode() for k, v in raw.items()}


def push(stream_id: str, data: bytes, offset: int) -> None:
    """Queue data for the node (the web tier's side of an upload), in frames of at most ``CHUNK`` that carry
    their place in the file (8 bytes, big-endian): a frame sent twice by a retried chunk is recognised."""
    conn, key = _redis(), _key(stream_id)
    for start in range(0, len(data), CHUNK):
        conn.rpush(key, b"D" + (offset + start).to_bytes(8, "big") + data[start : start + CHUNK])
    conn.expire(key, EXPIRE)


def pull(stream_id: str, timeout: float) -> tuple[int, bytes] | None:
    """The next frame for the node as (its offset in the file, data), or None after ``timeout`` seconds."""
    item = _redis().blpop([_key(stream_id)], timeout=int(timeout))
    return None if item is None else (int.from_bytes(item[1][1:9], "big"), item[1][9:])


def drop(stream_id: str) -> None:
    _redis().delete(_key(stream_id))
