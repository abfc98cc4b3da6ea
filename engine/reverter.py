"""Undo for multi-step operations: register a cleanup after each step, mark success at the end.

Built on ExitStack; if the block raises, the cleanups run in reverse order and
the original exception propagates, so a failed create or start leaves the
host as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from typing import Any


class Reverter:
    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._done = False

    def add(self, undo: Callable[..., Any], *args: Any) -> None:
        self._stack.callback(undo, *args)

    def success(self) -> None:
        self._done = True
        self._stack.pop_all()

    def __enter__(self) -> Reverter:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if not self._done:
            # Cleanups must not hide the error that made them run.
            with contextlib.suppress(Exception):
                self._stack.close()
        return False
