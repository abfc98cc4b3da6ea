"""The live stream: one websocket per page, subscribed to the objects the page shows.

A browser sends ``{"subscribe": ["dc", "node/<name>", "ct/<id>", "job/<id>"]}``;
each subscription is checked against the user's access before the socket
joins its group.  Events arrive as ``{"type": ..., ...}`` JSON (see webui.live).
When the user's access changes (``webui.signals``), the socket re-checks every
subscription at once, leaves the groups no longer allowed and says so with
``{"type": "unsubscribed", "groups": [...]}``; on logout of its session, on
deactivation or deletion of the user, it closes (4401).
"""

from __future__ import annotations

import json

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from webui.signals import user_group

MAX_MESSAGE = 8192  # bytes a browser may send in one frame
MAX_SUBSCRIPTIONS = 2000


class LiveConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        if not user or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.groups_joined: set[str] = set()
        self.subscribed: dict[str, str] = {}  # group -> what the browser asked for ("ct/100")
        self.user_id = user.id
        await self.channel_layer.group_add(user_group(user.id), self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        for group in getattr(self, "groups_joined", ()):
            await self.channel_layer.group_discard(group, self.channel_name)
        if getattr(self, "user_id", None):
            await self.channel_layer.group_discard(user_group(self.user_id), self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        if bytes_data is not None or text_data is None or len(text_data) > MAX_MESSAGE:
            await self._error("send JSON text frames of at most 8 KiB")
            return
        try:
            message = json.loads(text_data)
            wanted = message["subscribe"]
            if not isinstance(wanted, list) or not all(isinstance(w, str) for w in wanted):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            await self._error('expected {"subscribe": ["dc" | "node/<name>" | "ct/<id>" | "job/<id>", ...]}')
            return
        if len(self.groups_joined) + len(wanted) > MAX_SUBSCRIPTIONS:
            await self._error(f"at most {MAX_SUBSCRIPTIONS} subscriptions per socket")
            return
        allowed, denied, asked = await self._check(wanted)
        for group in allowed:
            if group not in self.groups_joined:
                await self.channel_layer.group_add(group, self.channel_name)
                self.groups_joined.add(group)
                self.subscribed[group] = asked[group]
        await self.send(json.dumps({"type": "subscribed", "groups": sorted(allowed), "denied": denied}))

    async def live_event(self, message):
        await self.send(json.dumps(message["event"]))

    async def user_access(self, message):
        """The user's login or access changed: keep only the subscriptions still allowed."""
        reason = message.get("reason")
        if reason == "logout":
            session = getattr(self.scope.get("session"), "session_key", None)
            if message.get("session") and message.get("session") == session:
                await self._end("your session ended (you logged out)")
            return
        if not await self._user_active():
            await self._end("your account was disabled or removed")
            return
        if not self.subscribed:
            return
        allowed, _, _ = await self._check(list(self.subscribed.values()))
        dropped = sorted(set(self.subscribed) - set(allowed))
        for group in dropped:
            await self.channel_layer.group_discard(group, self.channel_name)
            self.groups_joined.discard(group)
            self.subscribed.pop(group, None)
        if dropped:
            await self.send(
                json.dumps({"type": "unsubscribed", "groups": dropped, "message": "your access to these changed"})
            )

    async def _end(self, text: str) -> None:
        await self._error(text)
        await self.close(code=4401)

    async def _error(self, text: str) -> None:
        await self.send(json.dumps({"type": "error", "message": text}))

    @database_sync_to_async
    def _user_active(self) -> bool:
        from django.contrib.auth import get_user_model

        return get_user_model().objects.filter(pk=self.user_id, is_active=True).exists()

    @database_sync_to_async
    def _check(self, wanted: list[str]) -> tuple[list[str], list[str], dict[str, str]]:
        from django.contrib.auth import get_user_model

        from webui.access import Access
        from webui.models import Container, Job

        # The user afresh from the database: the socket's copy predates any change of it.
        user = get_user_model().objects.filter(pk=self.user_id).first()
        access = Access(user)
        allowed, denied, asked = [], [], {}
        for item in wanted:
            kind, _, name = item.partition("/")
            ok, group = False, None
            if kind == "dc":
                ok, group = "Sys.Audit" in access.privileges("/"), "dc"
            elif kind == "node" and name:
                ok, group = "Sys.Audit" in access.privileges(f"/nodes/{name}"), f"node.{name}"
            elif kind == "ct" and name.isdigit():
                container = Container.objects.select_related("node", "pool").filter(ctid=int(name)).first()
                ok, group = bool(container and access.can("VM.Audit", container)), f"ct.{name}"
            elif kind == "job" and name.isdigit():
                job = Job.objects.filter(pk=int(name)).first()
                ok, group = bool(job and can_see_job(access, job)), f"job.{name}"
            (allowed if ok else denied).append(group if ok else item)
            if ok:
                asked[group] = item
        return allowed, denied, asked


def can_see_job(access, job) -> bool:
    """A user sees their own jobs, and the jobs on anything they may audit."""
    from webui.models import Container

    if job.user_id and job.user_id == getattr(access.user, "id", None):
        return True
    if job.path.startswith("/ct/"):
        container = Container.objects.select_related("node", "pool").filter(ctid=int(job.target or 0)).first()
        if container:
            return access.can("VM.Audit", container)
    return "Sys.Audit" in access.privileges(job.path if not job.path.startswith("/ct/") else "/")
