"""The console websocket (``ws/console/<ctid>/?ticket=...``): a browser terminal, relayed to the node.

The consumer holds no terminal itself: it redeems the ticket, checks
VM.Console again, and then passes bytes between the browser and the relay of
the container's node (``tasks.console_relay``) over the channel layer.

Browser to server: binary frames are terminal input; text frames are JSON
control, ``{"type": "resize", "cols": C, "rows": R}``, ``{"type": "close"}`` or ``{"type": "flow"}``
(answered with the output counters: pending, peak, offset, written, acked).
Server to browser: binary frames are terminal output; text frames are
``{"type": "status", ...}``, ``{"type": "error", "message": ...}`` (with
``"fatal": true`` when the socket then closes) and ``{"type": "exit", "code": N}``.
Frames over ``MAX_FRAME`` end the session. Refusals are an error message,
then a close code in the 4000s the page understands. The mode is the
container's ``cmode`` (``tty``, Proxmox's default: a login prompt; ``shell``:
a root shell; ``console``: its init's output, read-only), unless the user
holds VM.Config on the container (``mode_refusal``). Logout of the socket's
login and loss of VM.Console (pushed through the group ``user.<id>``, see
``webui.signals``) end the session at once, processes included.
"""
from __future__ import annotations

import asyncio
import collections
import json
import uuid
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull
from channels.generic.websocket import AsyncWebsocketConsumer

from tasks.console_protocol import KEEPALIVE, MODES, SESSION_ID, WINDOW, relay_channel
from webui.signals import user_group

MAX_FRAME = 64 * 1024  # bytes in one frame from the browser
MAX_SIZE = 1000  # columns and rows
ACK_EVERY = WINDOW // 4
OPEN_TIMEOUT = 10.0  # seconds the relay has to answer an open or attach
EARLY_INPUT = 64 * 1024  # input typed before the relay answered, kept until it does
# Output handed to the socket but not yet taken by the server (its send has not returned: the
# browser reads slowly). Above this, relay output is no longer acknowledged, so the relay's window
# fills and the pty pauses; the relay never sends past the window, so this holds at most
# WINDOW + CHUNK bytes per console.
HIGH_WATER = 256 * 1024

# Close codes (the page maps them to what it shows and whether it reconnects).
CLOSE_EXITED = 1000
CLOSE_TOO_BIG = 1009
CLOSE_LOGIN = 4401
CLOSE_DENIED = 4403
CLOSE_STOPPED = 4409
CLOSE_GONE = 4410
CLOSE_RELAY = 4502
CLOSE_NO_RELAY = 4504


def container_cmode(container) -> str:
    """The console mode the container's config asks for (``cmode``; absent: ``tty``, as in Proxmox)."""
    cmode = (container.config or {}).get("cmode") or "tty"
    return cmode if cmode in MODES else "tty"


def mode_refusal(access, container, mode: str) -> str | None:
    """Why ``mode`` is refused to a VM.Console holder, or None. Any mode but the container's ``cmode``
    needs VM.Config: a login prompt must not turn into a root shell for whoever may only log in."""
    cmode = container_cmode(container)
    if mode == cmode or access.can("VM.Config", container):
        return None
    return (f"permission denied: CT {container.ctid} offers a {cmode} console (cmode); "
            f"a {mode} console needs VM.Config on {container.path}")


class ConsoleConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.session: str | None = None
        self.relay: str | None = None
        self.opened = False
        self.ended = False
        self.offset = 0  # output bytes the browser has been sent in this session
        self.acked = 0
        self.early: list[bytes] = []
        self.tasks: list[asyncio.Task] = []
        self.audit_detail: dict = {}
        self.user_group: str | None = None
        # Frames to the browser go out in order through one writer task, so that a browser that
        # reads slowly holds up neither the relay's messages nor the user's input and close.
        self.outbox: collections.deque = collections.deque()
        self.pending = 0  # output bytes in the outbox or in a send not yet returned
        self.peak = 0  # the most ``pending`` has been
        self.written = 0  # output offset the server has taken
        self.has_mail = asyncio.Event()
        self.writer = asyncio.ensure_future(self._write())
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
        if not (1 <= cols <= MAX_SIZE and 1 <= rows <= MAX_SIZE):
            cols, rows = 80, 24
        verdict = await self._redeem(token, user, ctid)
        if "refused" in verdict:
            await self.refuse(verdict["code"], verdict["refused"])
            return
        self.node, self.mode, self.user_id = verdict["node"], verdict["mode"], user.id
        self.relay = relay_channel(self.node)
        resuming = bool(verdict["session"])
        self.session = verdict["session"] or uuid.uuid4().hex
        self.audit_detail = {"session": self.session, "mode": self.mode}
        message = {"type": "console.attach" if resuming else "console.open", "session": self.session,
                   "ctid": ctid, "mode": self.mode, "user": user.id, "reply": self.channel_name,
                   "cols": cols, "rows": rows, "since": since if resuming else None}
        if not await self.to_relay(message):
            return
        await self.audit("console.resume" if resuming else "console.open", "ok")
        self.tasks.append(asyncio.ensure_future(self._open_timeout()))
        self.tasks.append(asyncio.ensure_future(self._keepalive()))

    async def disconnect(self, code):
        for task in getattr(self, "tasks", ()):
            task.cancel()
        if getattr(self, "writer", None) is not None:
            self.writer.cancel()
        if getattr(self, "user_group", None):
            await self.channel_layer.group_discard(self.user_group, self.channel_name)
        if getattr(self, "session", None) and not self.ended:
            # The relay keeps the session for its grace period; a new socket may resume it.
            await self.to_relay({"type": "console.detach"}, quiet=True)
            await self.audit("console.close", "ok", socket_code=code, kept=True)

    # ---- from the browser -------------------------------------------------------------------------
    async def receive(self, text_data=None, bytes_data=None):
        if self.ended or not self.session:
            return
        size = len(bytes_data) if bytes_data is not None else len((text_data or "").encode())
        if size > MAX_FRAME:
            await self.end_session(CLOSE_TOO_BIG, f"a frame of {size} bytes is over the limit of {MAX_FRAME}; "
                                                  "the session was ended")
            return
        if bytes_data is not None:
            if not bytes_data:
                return
            if not self.opened:
                if sum(map(len, self.early)) + len(bytes_data) <= EARLY_INPUT:
                    self.early.append(bytes_data)
                return
            await self.to_relay({"type": "console.input", "data": bytes_data})
            return
        try:
            control = json.loads(text_data)
            kind = control["type"] if isinstance(control, dict) else None
        except (ValueError, KeyError, TypeError):
            kind = None
        if kind == "resize":
            cols, rows = control.get("cols"), control.get("rows")
            if not (_is_int(cols) and _is_int(rows) and 1 <= cols <= MAX_SIZE and 1 <= rows <= MAX_SIZE):
                await self.send_json({"type": "error", "fatal": False,
                                      "message": f"resize refused: columns and rows are whole numbers from 1 to "
                                                 f"{MAX_SIZE} (got {str(cols)[:12]}×{str(rows)[:12]})"})
                return
            await self.to_relay({"type": "console.resize", "cols": cols, "rows": rows})
        elif kind == "flow":
            self.emit({"type": "flow", "pending": self.pending, "peak": self.peak, "offset": self.offset,
                       "written": self.written, "acked": self.acked, "high_water": HIGH_WATER})
        elif kind == "close":
            self.ended = True
            await self.to_relay({"type": "console.close"}, quiet=True)
            await self.audit("console.close", "ok", kept=False)
            await self.close(CLOSE_EXITED)
        else:
            await self.send_json({"type": "error", "fatal": False,
                                  "message": 'control frames are JSON: {"type": "resize", "cols": C, "rows": R} '
                                             'or {"type": "close"}; terminal input goes in binary frames'})

    # ---- from the relay ---------------------------------------------------------------------------
    async def console_opened(self, message):
        if message.get("session") != self.session or self.ended:
            return
        self.opened = True
        self.offset = self.acked = self.written = message.get("offset", 0)
        await self.send_json({"type": "status", "state": "open", "session": self.session, "ctid": self.ctid,
                              "mode": message.get("mode"), "resumed": message.get("resumed", False),
                              "reset": message.get("reset", True), "offset": self.offset,
                              "readonly": message.get("mode") == "console"})
        for data in self.early:
            await self.to_relay({"type": "console.input", "data": data})
        self.early = []

    async def console_output(self, message):
        if message.get("session") != self.session or self.ended:
            return
        offset, data = message["offset"], message["data"]
        if offset != self.offset:  # the relay never skips or reorders; refuse to show a corrupt stream
            await self.end_session(CLOSE_RELAY, f"console output out of order (expected byte {self.offset}, "
                                                f"got {offset}); the session was ended")
            return
        self.offset += len(data)
        self.emit(data)

    async def console_error(self, message):
        if message.get("session") != self.session or self.ended:
            return
        if not message.get("fatal"):
            await self.send_json({"type": "error", "fatal": False, "message": message.get("message", "")})
            return
        self.ended = True
        stopped = bool(message.get("stopped"))
        await self.audit("console.refused", "failed", reason=message.get("message", ""))
        await self.send_json({"type": "error", "fatal": True, "stopped": stopped, "gone": bool(message.get("gone")),
                              "message": message.get("message", "the console failed")})
        await self.close(CLOSE_STOPPED if stopped else CLOSE_GONE)

    async def console_exit(self, message):
        if message.get("session") != self.session or self.ended:
            return
        self.ended = True
        await self.audit("console.close", "ok", kept=False, reason=message.get("reason"), code=message.get("code"))
        await self.send_json({"type": "exit", "code": message.get("code"), "reason": message.get("reason")})
        await self.close(CLOSE_EXITED)

    async def console_detached(self, message):
        if message.get("session") != self.session or self.ended:
            return
        self.ended = True  # another socket holds the session now; leave it alone
        await self.send_json({"type": "error", "fatal": True, "taken": True, "message": message.get("message")})
        await self.close(CLOSE_GONE)

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

    async def revoke(self, code: int, text: str) -> None:
        """End the session now: the relay kills its processes (no grace period), the browser is told why."""
        self.ended = True
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        await self.to_relay({"type": "console.close"}, quiet=True)
        await self.audit("console.close", "denied", reason=text, kept=False)
        self.outbox.clear()  # output not yet sent is no longer the user's to see
        self.pending = 0
        await self.send_json({"type": "error", "fatal": True, "revoked": True, "message": text, "code": code})
        await self.close(code)

    def _session_key(self) -> str | None:
        session = self.scope.get("session")
        return getattr(session, "session_key", None)

    # ---- to the browser -----------------------------------------------------------------------------
    def emit(self, item) -> None:
        """Queue a frame (bytes: output; dict: control; int: close with that code) for the writer."""
        self.outbox.append(item)
        if isinstance(item, bytes):
            self.pending += len(item)
            self.peak = max(self.peak, self.pending)
        self.has_mail.set()

    async def _write(self) -> None:
        """Send the outbox in order. A send returns once the server took the frame (uvicorn waits while its
        transport is above its high-water mark), and output is acknowledged to the relay only while little
        is pending here, so a browser that reads slowly pauses the program instead of filling memory."""
        try:
            await self._write_outbox()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the client went away mid-send; disconnect() follows
            self.outbox.clear()

    async def _write_outbox(self) -> None:
        while True:
            await self.has_mail.wait()
            self.has_mail.clear()
            while self.outbox:
                item = self.outbox.popleft()
                if isinstance(item, bytes):
                    await self.send(bytes_data=item)
                    self.pending = max(0, self.pending - len(item))
                    self.written += len(item)
                    if (not self.ended and self.written - self.acked >= ACK_EVERY
                            and self.pending <= HIGH_WATER):
                        self.acked = self.written
                        await self.to_relay({"type": "console.ack", "offset": self.written}, quiet=True)
                elif isinstance(item, dict):
                    await self.send(text_data=json.dumps(item))
                else:
                    await super().close(item)
                    return

    async def send_json(self, payload: dict) -> None:
        self.emit(payload)

    async def close(self, code=None, reason=None) -> None:
        self.emit(code if code is not None else 1000)

    # ---- helpers ----------------------------------------------------------------------------------

    async def refuse(self, code: int, text: str) -> None:
        self.ended = True
        await self.audit("console.refused", "denied", reason=text)
        await self.send_json({"type": "error", "fatal": True, "message": text, "code": code})
        await self.close(code)

    async def end_session(self, code: int, text: str) -> None:
        self.ended = True
        await self.to_relay({"type": "console.close"}, quiet=True)
        await self.audit("console.close", "failed", reason=text)
        await self.send_json({"type": "error", "fatal": True, "message": text})
        await self.close(code)

    async def to_relay(self, message: dict, quiet: bool = False) -> bool:
        """Send to the node's relay, waiting while its channel is full (so a flood slows the browser down)."""
        message = {**message, "session": self.session, "reply": self.channel_name}
        delay, waited = 0.005, 0.0
        while True:
            try:
                await self.channel_layer.send(self.relay, message)
                return True
            except ChannelFull:
                if waited > OPEN_TIMEOUT:
                    break
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 0.2)
        if not quiet and not self.ended:
            self.ended = True
            await self.send_json({"type": "error", "fatal": True,
                                  "message": f"the console relay of node {self.node} does not keep up; try again"})
            await self.close(CLOSE_NO_RELAY)
        return False

    async def _open_timeout(self) -> None:
        await asyncio.sleep(OPEN_TIMEOUT)
        if not self.opened and not self.ended:
            self.ended = True
            await self.to_relay({"type": "console.close"}, quiet=True)
            await self.audit("console.refused", "failed", reason="relay did not answer")
            await self.send_json({"type": "error", "fatal": True,
                                  "message": f"the console relay of node {self.node} does not answer "
                                             "(is python -m tasks.console_relay running there?)"})
            await self.close(CLOSE_NO_RELAY)

    async def _keepalive(self) -> None:
        """Tell the relay this socket lives; close it if the user lost VM.Console or was disabled."""
        while not self.ended:
            await asyncio.sleep(KEEPALIVE)
            if self.ended:
                return
            if not await self._still_allowed():
                await self.revoke(CLOSE_DENIED, f"your access to CT {self.ctid} was revoked; the console was closed")
                return
            await self.to_relay({"type": "console.keepalive"}, quiet=True)

    @database_sync_to_async
    def _still_allowed(self) -> bool:
        from django.contrib.auth import get_user_model

        from webui.access import Access
        from webui.models import Container

        user = get_user_model().objects.filter(pk=self.user_id, is_active=True).first()
        container = Container.objects.select_related("node", "pool").filter(ctid=self.ctid).first()
        if not (user and container):
            return False
        access = Access(user)
        return access.can("VM.Console", container) and mode_refusal(access, container, self.mode) is None

    @database_sync_to_async
    def _redeem(self, token: str, user, ctid: int) -> dict:
        from django.utils import timezone

        from webui.access import Access
        from webui.models import ConsoleTicket

        ticket = ConsoleTicket.find(token)
        if ticket is None:
            return {"refused": "no valid console ticket (it is unknown or was forged); reload the console",
                    "code": CLOSE_DENIED}
        if ticket.user_id != user.id:
            return {"refused": "this console ticket was issued to another user", "code": CLOSE_DENIED}
        if ticket.container.ctid != ctid:
            return {"refused": f"this console ticket is for CT {ticket.container.ctid}, not CT {ctid}",
                    "code": CLOSE_DENIED}
        if ticket.expires <= timezone.now():
            return {"refused": "the console ticket expired; reload the console", "code": CLOSE_DENIED}
        if not ticket.redeem():
            return {"refused": "the console ticket was already used; reload the console", "code": CLOSE_DENIED}
        container = ticket.container
        access = Access(user)
        if not access.can("VM.Console", container):
            return {"refused": f"permission denied: VM.Console on {container.path} is required", "code": CLOSE_DENIED}
        refusal = mode_refusal(access, container, ticket.mode)
        if refusal:  # checked again here: cmode or the user's rights may have changed since the ticket
            return {"refused": refusal, "code": CLOSE_DENIED}
        if ticket.mode not in MODES or (ticket.session and not SESSION_ID.match(ticket.session)):
            return {"refused": "malformed console ticket", "code": CLOSE_DENIED}
        return {"node": container.node.name, "mode": ticket.mode, "session": ticket.session}

    async def audit(self, action: str, outcome: str, **detail) -> None:
        await _audit(self.scope, f"/ct/{self.ctid}", action, outcome, {**self.audit_detail, **detail})


@database_sync_to_async
def _audit(scope, path: str, action: str, outcome: str, detail: dict) -> None:
    from webui.models import AuditEntry

    user = scope.get("user")
    user = user if user is not None and user.is_authenticated else None
    client = scope.get("client") or (None, None)
    AuditEntry.objects.create(user=user, username=getattr(user, "username", ""), action=action, path=path,
                              address=client[0], outcome=outcome, detail=detail)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(query: dict, key: str, default):
    try:
        return int((query.get(key) or [""])[0])
    except ValueError:
        return default
