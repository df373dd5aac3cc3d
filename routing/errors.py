"""Routing errors.

    RoutingError
    ├── NoBackendAvailable     every backend was ruled out; ``retry_after`` is set when that is
    │                          temporary (a cooldown, a rate limit, an open circuit)
    └── ConversationStopped    the runaway guard stopped this conversation for a while

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


class ConversationStopped(RoutingError):
    """The runaway guard refuses this conversation until ``retry_after`` seconds from now."""

    def __init__(self, reason: str, setting: str, message: str, *, retry_after: float) -> None:
        super().__init__(f"{message}; the gateway's runaway guard stopped it (setting: {setting}). "
                         "Start a new task, or change the setting")
        self.reason = reason
        self.setting = setting
        self.retry_after = retry_after
