"""Throttles: anonymous requests (DRF's ``AnonRateThrottle``, rate ``anon``) and failed token logins.

A failed token authentication never reaches the views' throttles (DRF
authenticates first), so the token authentication counts its failures per
client address itself and refuses further tries once the ``token_failure``
rate is spent, even with a right secret, until the window has passed.
"""
from __future__ import annotations

from rest_framework.throttling import SimpleRateThrottle


class TokenFailureThrottle(SimpleRateThrottle):
    scope = "token_failure"

    def get_cache_key(self, request, view=None) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}

    def _history(self, key: str) -> list[float]:
        now = self.timer()
        return [t for t in self.cache.get(key, []) if t > now - self.duration]

    def blocked_for(self, request) -> float | None:
        """Seconds until another try is allowed, or None when it is allowed now."""
        history = self._history(self.get_cache_key(request))
        if len(history) < self.num_requests:
            return None
        return max(0.0, history[-1] + self.duration - self.timer())

    def failed(self, request) -> None:
        key = self.get_cache_key(request)
        history = self._history(key)
        history.insert(0, self.timer())
        self.cache.set(key, history[: self.num_requests], self.duration)
