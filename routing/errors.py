"""Routing errors.

    RoutingError
    └── NoBackendAvailable     every backend was ruled out; ``retry_after`` is set when that is
                               temporary (a cooldown, a rate limit, an open circuit)

Upstream failures keep their own tree (:mod:`backends.errors`); the router re-raises them.
"""

from __future__ import annotations


class RoutingError(Exception):
    pass


class NoBackendAvailable(RoutingError):
    def __init__(self, reasons: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"no backend can serve this request: {reasons}")
        self.reasons = reasons
        self.retry_after = retry_after
