"""Writing one console session as an asciicast v2 file, as its output passes through the consumer.

Format (asciinema's v2): a JSON header line ``{"version": 2, "width": W, "height": H, "timestamp": T, ...}``
then one JSON array per event, ``[seconds since start, "o", text]`` for output and ``[t, "r", "WxH"]`` for a
resize. Only output is kept, never keystrokes: a password typed at a prompt is not echoed, so it is not in
the file either. A resumed session appends to its file, its times still counted from the first start.
"""

from __future__ import annotations

import codecs
import json
import os
import time

from django.utils import timezone

from webui.models import ConsoleRecording, RecordingRule


class Recorder:
    def __init__(self, row: ConsoleRecording, started: float):
        self.row = row
        self.started = started
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.size = row.size
        fd = os.open(row.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.file = os.fdopen(fd, "a", encoding="utf-8")

    @classmethod
    def start(cls, session: str, ctid: int, node: str, user, mode: str, cols: int, rows: int) -> Recorder | None:
        """A recorder if a rule asks for this console (None otherwise); called from a thread (database)."""
        existing = ConsoleRecording.objects.filter(session=session).first()
        if existing is None and not RecordingRule.applies(ctid, user.id):
            return None
        if existing is not None:
            with open(existing.path, encoding="utf-8") as f:
                started = json.loads(f.readline())["timestamp"]
            ConsoleRecording.objects.filter(pk=existing.pk).update(ended=None)
            recorder = cls(existing, float(started))
            recorder._event("r", f"{cols}x{rows}")
            return recorder
        row = ConsoleRecording.objects.create(session=session, ctid=ctid, node=node, user=user, mode=mode)
        now = time.time()
        recorder = cls(row, now)
        header = {
            "version": 2,
            "width": cols,
            "height": rows,
            "timestamp": int(now),
            "title": f"CT {ctid} ({mode}) by {user.get_username()}",
            "env": {"TERM": "xterm-256color"},
        }
        recorder.file.write(json.dumps(header) + "\n")
        recorder.file.flush()
        return recorder

    def _event(self, kind: str, text: str) -> None:
        self.file.write(json.dumps([round(time.time() - self.started, 6), kind, text]) + "\n")

    def output(self, data: bytes) -> None:
        text = self.decoder.decode(data)
        self.size += len(data)
        if text:
            self._event("o", text)
            self.file.flush()

    def resize(self, cols: int, rows: int) -> None:
        self._event("r", f"{cols}x{rows}")
        self.file.flush()

    def close(self) -> None:
        """Flush and record the end; called from a thread (database)."""
        if self.file.closed:
            return
        rest = self.decoder.decode(b"", final=True)
        if rest:
            self._event("o", rest)
        self.file.close()
        ConsoleRecording.objects.filter(pk=self.row.pk).update(ended=timezone.now(), size=self.size)
