"""A template uploaded from the browser, resumable: the chunks travel to the node through the broker
(``webui.filestream``) and a ``tmplupload`` job on the node writes them; the web tier keeps nothing on disk.

``start`` opens a session (Datastore.AllocateTemplate on the node, as downloading a template); ``put``
takes one chunk by its ``Content-Range`` and answers once the node has written it, with the node's offset;
a chunk that does not start at that offset is refused with it (HTTP 416), so a client that lost its
connection asks ``status`` and goes on from there.  At the end the node's SHA-256 of the file is shown.
"""

from __future__ import annotations

import re
import time

from django.core.exceptions import PermissionDenied, ValidationError

from engine.errors import ValidationError as EngineValidationError
from engine.templates.entry import check_template_name
from webui import filestream
from webui.access import Access, require
from webui.models import Job, Node, StoredTemplate
from webui.models.queue import submit

MAX_SIZE = 64 << 30
MAX_CHUNK = 16 << 20
RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
WRITE_WAIT = 120.0  # seconds a chunk may take to be written on the node


class RangeRefused(Exception):
    """A chunk that does not start where the node's file ends (HTTP 416): ``offset`` says where to go on."""

    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.offset = offset


def start(access: Access, node: Node, name, size, address: str | None = None) -> tuple[str, Job]:
    require(access, "Datastore.AllocateTemplate", node, address=address)
    try:
        name = check_template_name(name)
    except EngineValidationError as exc:
        raise ValidationError({"filename": [str(exc)]}) from None
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_SIZE:
        raise ValidationError({"size": [f"the file's size in bytes, 1 to {MAX_SIZE}"]})
    if StoredTemplate.objects.filter(node=node, name=name).exists():
        raise ValidationError({"filename": [f"template {name} is already in the store of node '{node.name}'"]})
    stream = filestream.new_id()
    fields = {"node": node.name, "name": name, "size": size, "user": access.user.pk, "offset": 0}
    filestream.save_session(stream, fields)
    return stream, _job(access, node, stream, fields, address)


def _job(access: Access, node: Node, stream: str, fields: dict, address: str | None) -> Job:
    params = {"stream": stream, "name": fields["name"], "size": int(fields["size"])}
    job = submit("tmplupload", node, node.path, fields["name"], user=access.user, params=params, address=address)
    filestream.save_session(stream, {"job": job.pk})
    return job


def status(access: Access, stream: str) -> dict:
    fields = _session(access, stream)
    done = "sha256" in fields
    return {
        "upload": stream,
        "filename": fields["name"],
        "size": int(fields["size"]),
        "offset": int(fields.get("offset", 0)),
        "done": done,
        "sha256": fields.get("sha256"),
        "error": fields.get("error"),
        "job": int(fields["job"]) if fields.get("job") else None,
    }


def _session(access: Access, stream: str) -> dict:
    try:
        fields = filestream.session(stream)
    except filestream.StreamError:
        fields = {}
    if not fields:
        raise ValidationError({"upload": ["no such upload (or it expired)"]})
    if str(getattr(access.user, "pk", "")) != fields.get("user"):
        raise PermissionDenied("permission denied: this upload is another user's")
    return fields


def put(access: Access, stream: str, content_range: str, data: bytes, address: str | None = None) -> dict:
    fields = _session(access, stream)
    match = RANGE.match(content_range or "")
    if not match:
        raise ValidationError({"Content-Range": ["expected 'bytes FIRST-LAST/SIZE'"]})
    first, last, total = (int(g) for g in match.groups())
    size, offset = int(fields["size"]), int(fields.get("offset", 0))
    if total != size or last < first or last >= size or last - first + 1 != len(data) or len(data) > MAX_CHUNK:
        raise ValidationError({"Content-Range": [f"a range within 0-{size - 1} that matches the body (≤ 16 MiB)"]})
    if fields.get("error") or fields.get("sha256"):
        raise ValidationError({"upload": [fields.get("error") or "this upload is complete"]})
    if first != offset:
        raise RangeRefused(f"the node has {offset} bytes: send from there", offset)
    job = Job.objects.filter(pk=fields.get("job")).first()
    if job is None or not job.active:  # paused (or never started): go on in a new job
        _job(access, Node.objects.get(name=fields["node"]), stream, fields, address)
    filestream.push(stream, data, first)
    deadline = time.monotonic() + WRITE_WAIT
    while time.monotonic() < deadline:
        now = status(access, stream)
        if now["error"]:
            raise ValidationError({"upload": [now["error"]]})
        if now["done"] or (now["offset"] > last and last < size - 1):  # the last chunk: once checksummed
            return now
        time.sleep(0.05)
    return status(access, stream)
