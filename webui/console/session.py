"""The console websocket (``ws/console/<ctid>/?ticket=...``): a browser terminal, relayed to the node.

The consumer holds no terminal itself: it redeems the ticket, checks
VM.Console again, and then passes bytes between the browser and the relay of
the container's node (``tasks.console_relay``) over the channel layer
(``webui.console.relay_client``; what the two say: ``tasks.console_protocol``).

Browser to server: binary frames are terminal input; text frames are JSON
control, ``{"type": "resize", "cols": C, "rows": R}``, ``{"type": "close"}`` or ``{"type": "flow"}``
(answered with the output counters: pending, peak, offset, written, acked).
Server to browser: binary frames are terminal output; text frames are
``{"type": "status", ...}``, ``{"type": "error", "message": ...}`` (with
``"fatal": true`` when the socket then closes) and ``{"type": "exit", "code": N}``.
Frames over ``MAX_FRAME`` end the session. Refusals are an error message,
then a close code in the 4000s the page understands. The mode is the
container's ``cmode`` (``tty``, Proxmox's default: a login prompt; ``shell``:
a root shell; ``console``: its /dev/console held since its start, read-write,
after the tail of its init's output; the console log read-only when that
terminal is not there), unless the user
holds VM.Config on the container (``mode_refusal``). Logout of the socket's
login and loss of VM.Console (pushed through the group ``user.<id>``, see
``webui.signals``) end the session at once, processes included.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from tasks.console_protocol import KEEPALIVE, MAX_SIZE, is_shell, is_size, trace_stamp, trace_start
from webui.console import tickets
from webui.console.outbox import Outbox
from webui.console.recording import Recorder
from webui.console.relay_client import HIGH_WATER, OPEN_TIMEOUT, OutOfOrder, RelayClient
from webui.console.tickets import CLOSE_DENIED
from webui.signals import user_group

MAX_FRAME = 64 * 1024  # bytes in one frame from the browser

# Close codes (the page maps them to what it shows and whether it reconnects).
CLOSE_EXITED = 1000
CLOSE_TOO_BIG = 1009
CLOSE_LOGIN = 4401
CLOSE_STOPPED = 4409
CLOSE_GONE = 4410
CLOSE_RELAY = 4502
CLOSE_NO_RELAY = 4504


# Messages whose handlers never touch the database (a keystroke, a piece of output, a resize: what
# needs the database goes through database_sync_to_async, which closes stale connections itself).
# Channels' dispatch first closes old database connections on its one database thread, a thread round
# trip per message for every socket of the process; for these it is skipped: those hops were the
# largest part of the web server's work per echo.
NO_DATABASE = frozenset({"websocket.receive", "console.output"})


class ConsoleConsumer(AsyncWebsocketConsumer):
    async def dispatch(self, message):
        if message.get("type") in NO_DATABASE:
            await getattr(self, get_handler_name(message))(message)
        else:
            await super().dispatch(message)

    async def connect(self):
        self.session: str | None = None
        self.relay: RelayClient | None = None
        self.ended = False
        self.tasks: list[asyncio.Task] = []
        self.audit_detail: dict = {}
        self.user_group: str | None = None
        self.recorder: Recorder | None = None
        self.outbox = Outbox(self.send, super().close, self._taken)
        # Accept first, so that a refusal can carry a message the page shows (the origin was
        # checked before this by AllowedHostsOriginValidator, which refuses without accepting).
        await self.accept()
        user = self.scope.get("user")
        ctid = int(self.scope["url_route"]["kwargs"]["ctid"])
        self.ctid = ctid
        if not user or not user.is_authenticated:
            await self.refuse(CLOSE_LOGIN, "log in first: this console belongs to a session that has ended")
            return
        # Logout, deactivation and changes of access reach every socket of the user at once.
        self.user_group = user_group(user.id)
        await self.channel_layer.group_add(self.user_group, self.channel_name)
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        token = (query.get("ticket") or [""])[0]
        cols, rows = _number(query, "cols", 80), _number(query, "rows", 24)
        since = _number(query, "since", None)
        shell = (query.get("shell") or [""])[0] or None  # shell mode's shell; the default when absent
        if not is_shell(shell):
            await self.refuse(CLOSE_DENIED, f"shell {shell[:40]!r}: give an absolute path such as /bin/bash")
            return
        if not (is_size(cols) and is_size(rows)):
            cols, rows = 80, 24
        verdict = await database_sync_to_async(tickets.redeem)(token, user, ctid)
        if "refused" in verdict:
            await self.refuse(verdict["code"], verdict["refused"])
            return
        self.node, self.mode, self.user_id = verdict["node"], verdict["mode"], user.id
        resuming = bool(verdict["session"])
        self.session = verdict["session"] or uuid.uuid4().hex
        self.relay = RelayClient(self.channel_layer, self.channel_name, self.node, self.session, self._relay_stuck)
        self.audit_detail = {"session": self.session, "mode": self.mode}
        if not await self.relay.open(ctid, self.mode, user.id, cols, rows, since, resuming, shell):
            return
        # Recorded when a rule names the container or the user (webui.models.recordings).
        self.recorder = await database_sync_to_async(Recorder.start)(
            self.session, ctid, self.node, user, self.mode, cols, rows
        )
        if self.recorder is not None:
            self.audit_detail["recorded"] = self.recorder.row.session
        await self.audit("console.resume" if resuming else "console.open", "ok")
        self.tasks.append(asyncio.ensure_future(self._open_timeout()))
        self.tasks.append(asyncio.ensure_future(self._keepalive()))

    async def disconnect(self, code):
        for task in getattr(self, "tasks", ()):
            task.cancel()
        if getattr(self, "recorder", None) is not None:
            await database_sync_to_async(self.recorder.close)()
        if getattr(self, "outbox", None) is not None:
            self.outbox.stop()
        if getattr(self, "user_group", None):
            await self.channel_layer.group_discard(self.user_group, self.channel_name)
        if getattr(self, "session", None) and not self.ended:
            # The relay keeps the session for its grace period; a new socket may resume it.
            await self.relay.send({"type": "console.detach"}, quiet=True)
            await self.audit("console.close", "ok", socket_code=code, kept=True)

    # ---- from the browser -------------------------------------------------------------------------
    async def receive(self, text_data=None, bytes_data=None):
        if self.ended or not self.session:
            return
        size = len(bytes_data) if bytes_data is not None else len((text_data or "").encode())
        if size > MAX_FRAME:
            await self.end_session(
                CLOSE_TOO_BIG, f"a frame of {size} bytes is over the limit of {MAX_FRAME}; the session was ended"
            )
            return
        if bytes_data is not None:
            if bytes_data:
                await self.relay.input(bytes_data, trace_start("consumer_in"))
            return
        try:
            control = json.loads(text_data)
            kind = control["type"] if isinstance(control, dict) else None
        except (ValueError, KeyError, TypeError):
            kind = None
        if kind == "resize":
            cols, rows = control.get("cols"), control.get("rows")
            if not (is_size(cols) and is_size(rows)):
                await self.send_json(
                    {
                        "type": "error",
                        "fatal": False,
                        "message": f"resize refused: columns and rows are whole numbers from 1 to "
                        f"{MAX_SIZE} (got {str(cols)[:12]}×{str(rows)[:12]})",
                    }
                )
                return
            await self.relay.send({"type": "console.resize", "cols": cols, "rows": rows})
            if self.recorder is not None:
                self.recorder.resize(cols, rows)
        elif kind == "flow":
            relay, outbox = self.relay, self.outbox
            self.outbox.put(
                {
                    "type": "flow",
                    "pending": outbox.pending,
                    "peak": outbox.peak,
                    "offset": relay.offset,
                    "written": relay.written,
                    "acked": relay.acked,
                    "high_water": HIGH_WATER,
                }
            )
        elif kind == "close":
            self.ended = True
            await self.relay.send({"type": "console.close"}, quiet=True)
            await self.audit("console.close", "ok", kept=False)
            await self.close(CLOSE_EXITED)
        else:
            await self.send_json(
                {
                    "type": "error",
                    "fatal": False,
                    "message": 'control frames are JSON: {"type": "resize", "cols": C, "rows": R} '
                    'or {"type": "close"}; terminal input goes in binary frames',
                }
            )

    # ---- from the relay ---------------------------------------------------------------------------
    def _ours(self, message) -> bool:
        return message.get("session") == self.session and not self.ended

    async def console_opened(self, message):
        if not self._ours(message):
            return
        offset = message.get("offset", 0)
        await self.send_json(
            {
                "type": "status",
                "state": "open",
                "session": self.session,
                "ctid": self.ctid,
                "mode": message.get("mode"),
                "resumed": message.get("resumed", False),
                "reset": message.get("reset", True),
                "offset": offset,
                "readonly": bool(message.get("readonly")),
            }
        )
        await self.relay.opened_at(offset)

    async def console_output(self, message):
        if not self._ours(message):
            return
        try:
            data = self.relay.output(message)
            if self.recorder is not None:
                self.recorder.output(data)
            self.outbox.put(data)
            trace = message.get("trace")
            if trace is not None:  # CAISSON_CONSOLE_TRACE: the outbox finishes it once the socket took the data
                trace_stamp(trace, "consumer_out")
                self.outbox.put(trace)
        except OutOfOrder as exc:  # refuse to show a corrupt stream
            await self.end_session(CLOSE_RELAY, f"{exc}; the session was ended")

    async def console_error(self, message):
        if not self._ours(message):
            return
        if not message.get("fatal"):
            await self.send_json({"type": "error", "fatal": False, "message": message.get("message", "")})
            return
        self.ended = True
        stopped = bool(message.get("stopped"))
        await self.audit("console.refused", "failed", reason=message.get("message", ""))
        await self.send_json(
            {
                "type": "error",
                "fatal": True,
                "stopped": stopped,
                "gone": bool(message.get("gone")),
                "message": message.get("message", "the console failed"),
            }
        )
        await self.close(CLOSE_STOPPED if stopped else CLOSE_GONE)

    async def console_exit(self, message):
        if not self._ours(message):
            return
        self.ended = True
        await self.audit("console.close", "ok", kept=False, reason=message.get("reason"), code=message.get("code"))
        await self.send_json({"type": "exit", "code": message.get("code"), "reason": message.get("reason")})
        await self.close(CLOSE_EXITED)

    async def console_detached(self, message):
        if not self._ours(message):
            return
        self.ended = True  # another socket holds the session now; leave it alone
        await self.send_json({"type": "error", "fatal": True, "taken": True, "message": message.get("message")})
        await self.close(CLOSE_GONE)

    async def _taken(self, size: int) -> None:
        """The server took output: acknowledge it to the relay while the session lasts."""
        await self.relay.taken(size, self.outbox.pending, ack=not self.ended)

    async def _relay_stuck(self) -> None:
        if not self.ended:
            self.ended = True
            await self.send_json(
                {
                    "type": "error",
                    "fatal": True,
                    "message": f"the console relay of node {self.node} does not keep up; try again",
                }
            )
            await self.close(CLOSE_NO_RELAY)

    async def _open_timeout(self) -> None:
        await asyncio.sleep(OPEN_TIMEOUT)
        if not self.relay.opened and not self.ended:
            self.ended = True
            await self.relay.send({"type": "console.close"}, quiet=True)
            await self.audit("console.refused", "failed", reason="relay did not answer")
            await self.send_json(
                {
                    "type": "error",
                    "fatal": True,
                    "message": f"the console relay of node {self.node} does not answer "
                    "(is python -m tasks.console_relay running there?)",
                }
            )
            await self.close(CLOSE_NO_RELAY)

    # ---- access withdrawn ---------------------------------------------------------------------------
    async def user_access(self, message):
        """The user logged out, was deactivated or deleted, or their access changed: check at once."""
        if self.ended or not self.session:
            return
        if message.get("reason") == "logout":
            if message.get("session") and message.get("session") == self._session_key():
                await self.revoke(CLOSE_LOGIN, "your session ended (you logged out); the console was closed")
            return
        if not await self._still_allowed():
            await self.revoke(CLOSE_DENIED, f"your access to CT {self.ctid} was revoked; the console was closed")

    async def _keepalive(self) -> None:
        """Tell the relay this socket lives; close it if the user lost VM.Console or was disabled."""
        while not self.ended:
            await asyncio.sleep(KEEPALIVE)
            if self.ended:
                return
            if not await self._still_allowed():
                await self.revoke(CLOSE_DENIED, f"your access to CT {self.ctid} was revoked; the console was closed")
                return
            await self.relay.send({"type": "console.keepalive"}, quiet=True)

    async def revoke(self, code: int, text: str) -> None:
        """End the session now: the relay kills its processes (no grace period), the browser is told why."""
        self.ended = True
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        await self.relay.send({"type": "console.close"}, quiet=True)
        await self.audit("console.close", "denied", reason=text, kept=False)
        self.outbox.drop()  # output not yet sent is no longer the user's to see
        await self.send_json({"type": "error", "fatal": True, "revoked": True, "message": text, "code": code})
        await self.close(code)

    def _session_key(self) -> str | None:
        session = self.scope.get("session")
        return getattr(session, "session_key", None)

    async def _still_allowed(self) -> bool:
        return await database_sync_to_async(tickets.still_allowed)(self.user_id, self.ctid, self.mode)

    # ---- to the browser -----------------------------------------------------------------------------
    async def send_json(self, payload: dict) -> None:
        self.outbox.put(payload)

    async def close(self, code=None, reason=None) -> None:
        self.outbox.put(code if code is not None else 1000)

    async def refuse(self, code: int, text: str) -> None:
        self.ended = True
        await self.audit("console.refused", "denied", reason=text)
        await self.send_json({"type": "error", "fatal": True, "message": text, "code": code})
        await self.close(code)

    async def end_session(self, code: int, text: str) -> None:
        self.ended = True
        await self.relay.send({"type": "console.close"}, quiet=True)
        await self.audit("console.close", "failed", reason=text)
        await self.send_json({"type": "error", "fatal": True, "message": text})
        await self.close(code)

    async def audit(self, action: str, outcome: str, **detail) -> None:
        await database_sync_to_async(tickets.audit)(
            self.scope, f"/ct/{self.ctid}", action, outcome, {**self.audit_detail, **detail}
        )


def _number(query: dict, key: str, default):
    try:
        return int((query.get(key) or [""])[0])
    except ValueError:
        return default
