"""Progress reports and cancellation, shared by backup, restore and verify.

``progress(done, total)`` gets bytes: for a backup, file data archived so far
against the rootfs's size; for a restore or verify, archive bytes read against
the archive's size. ``cancel`` is a callable returning True, or a
``threading.Event``; it is looked at between archive members, so a Celery job
can stop a long backup cleanly (the temporary file is removed, the container
thawed or restarted).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from engine.errors import Cancelled

Progress = Callable[[int, int], None]
CancelCheck = Callable[[], bool] | threading.Event


def is_cancelled(cancel: CancelCheck | None) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


def check(cancel: CancelCheck | None, what: str) -> None:
    if is_cancelled(cancel):
        raise Cancelled(f"{what}: cancelled")
