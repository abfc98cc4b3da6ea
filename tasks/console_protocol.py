"""The console protocol: what the web tier's consumer and the node's relay say to each other.

Both ends import this module and nothing of each other: the consumer
(``webui.console``, no root) and the relay (``python -m tasks.console_relay``,
root on the node) meet only on the channel layer. It imports nothing of the
project, so either side may take it.

The consumer sends to the node's channel (``relay_channel(node)``); the relay
answers on the consumer's own channel (``reply``). Every message carries the
``session`` id (``SESSION_ID``: 32 hex digits, made by the consumer) and, to
the relay, ``reply``.

To the relay (``TO_RELAY``):
  ``console.open`` (``ctid``, ``mode``, ``user``, ``cols``, ``rows``, and ``shell``: the shell of ``shell`` mode,
  an absolute path in the container, or null for bash if it has one, else sh): a new terminal;
  ``console.attach`` (the same and ``since``, the output byte reached): take a kept session over;
  ``console.input`` (``data``, bytes); ``console.resize`` (``cols``, ``rows``);
  ``console.ack`` (``offset``: output taken up to there; opens the window again);
  ``console.keepalive`` (every ``KEEPALIVE`` seconds); ``console.detach`` (the socket
  dropped: the relay keeps the session for its grace period); ``console.close``
  (end it now, processes included).
To the consumer (``TO_CONSUMER``):
  ``console.opened`` (``mode``, ``readonly``: the console log followed, ``resumed``, ``reset``, ``offset``);
  ``console.output`` (``offset``, ``data``: at most ``CHUNK`` bytes, offsets follow on);
  ``console.error`` (``message``, ``fatal``; ``stopped``, ``gone`` say why);
  ``console.exit`` (``code``, ``reason``); ``console.detached`` (``message``: another
  socket took the session).

Flow control: the relay sends at most ``WINDOW`` bytes the consumer has not
acknowledged, and the consumer acknowledges every ``ACK_EVERY`` bytes.

Tracing (off unless ``CAISSON_CONSOLE_TRACE`` names a file): a keystroke crosses
five processes' worth of hops, and the echo's total alone does not say which
one a slow echo spent its time in. With the variable set in the web server's
environment, the consumer stamps a ``console.input`` with ``trace``: a list of
[stage, wall-clock ns] (the host's one clock), starting with when it took the
frame; the relay adds when it took the message, wrote the pty, read the echo
and sent it, and passes the list on in its next ``console.output``; the
consumer adds when that arrived and when the socket took it, then appends the
list as one JSON line to the file. ``python bench/console_trace.py FILE`` sums
it per stage (``TRACE_STAGES``). Unset, no message carries a trace.
"""

from __future__ import annotations

import json
import os
import re
import time

MODES = ("shell", "tty", "console")  # Proxmox's cmode: a root shell, a login prompt, init's output (read-only)
CHUNK = 256 * 1024  # largest output message (and websocket frame to the browser)
# Output bytes sent but not yet acknowledged by the consumer. Bulk output runs at most WINDOW per
# acknowledgement's round trip (relay → layer → consumer → socket → ack → relay), which stretches to
# tens of ms on a loaded node: 2 MiB keeps that above 20 MB/s up to 100 ms, and bounds what one
# console holds in the web process for a browser that stalls.
WINDOW = 2 * 1024 * 1024
ACK_EVERY = WINDOW // 4  # the consumer acknowledges output in steps of this many bytes
KEEPALIVE = 10.0  # a consumer says it is alive this often ...
STALE = 3 * KEEPALIVE  # ... and is taken for gone (its session detached) after this long without a word
MAX_SIZE = 1000  # columns and rows of a terminal
SESSION_ID = re.compile(r"^[0-9a-f]{32}$")
SHELL_PATH = re.compile(r"(/[A-Za-z0-9_.+-]+)+")  # an absolute path, plain characters only

TO_RELAY = (
    "console.open",
    "console.attach",
    "console.input",
    "console.resize",
    "console.ack",
    "console.keepalive",
    "console.detach",
    "console.close",
)
TO_CONSUMER = ("console.opened", "console.output", "console.error", "console.exit", "console.detached")


def relay_channel(node: str) -> str:
    """The channel-layer name a node's relay listens on."""
    return f"console.{node}"


def is_session_id(value) -> bool:
    return isinstance(value, str) and SESSION_ID.match(value) is not None


def is_shell(value) -> bool:
    """A shell to run: None (the default), or an absolute path of plain characters, without ``.`` or ``..``."""
    if value is None:
        return True
    return (
        isinstance(value, str)
        and len(value) <= 128
        and SHELL_PATH.fullmatch(value) is not None
        and not any(part in (".", "..") for part in value.split("/"))
    )


def is_count(value) -> bool:
    """A whole number (a bool is not one), as offsets, ids and sizes must be."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_size(value) -> bool:
    """A terminal's columns or rows: 1 to ``MAX_SIZE``."""
    return is_count(value) and 1 <= value <= MAX_SIZE


def error(session, text: str, fatal: bool = True, **why) -> dict:
    """A ``console.error``; ``why``: ``stopped=True`` (the container is not running), ``gone=True``
    (the session no longer exists)."""
    return {"type": "console.error", "session": session, "fatal": fatal, "message": text, **why}


TRACE_PATH = os.environ.get("CAISSON_CONSOLE_TRACE") or None
# The stages in path order; a line carries the stages its echo passed, each a wall-clock ns.
TRACE_STAGES = ("consumer_in", "relay_in", "pty_written", "pty_read", "relay_out", "consumer_out", "socket_took")


def trace_start(stage: str) -> list | None:
    """A new trace stamped ``stage`` now, or None when tracing is off."""
    return [[stage, time.time_ns()]] if TRACE_PATH else None


def trace_stamp(trace, stage: str) -> None:
    """Add ``stage`` now to a trace (a list of [stage, ns]); anything else (None, junk from a peer) is left alone."""
    if isinstance(trace, list):
        trace.append([stage, time.time_ns()])


def trace_write(trace) -> None:
    """Append a finished trace to the file as one JSON line (one write: lines of processes do not interleave)."""
    if TRACE_PATH and isinstance(trace, list):
        fd = os.open(TRACE_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (json.dumps(trace) + "\n").encode())
        finally:
            os.close(fd)
