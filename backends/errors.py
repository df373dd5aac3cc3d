"""Backend errors: every upstream failure becomes exactly one of these.

    BackendError                 any upstream failure; carries backend, status, retry_after
    ├── BackendUnavailable       connect/reset/timeout, 5xx, 429: another backend may serve
    ├── BackendRejected          a 4xx that means the request itself is wrong: goes to the client
    │   └── ContextOverflow      the prompt does not fit this backend (a bigger one may take it)
    └── BackendProtocolError     malformed event, or a stream that ended before it finished

Foreign exceptions (aiohttp, timeouts, bad JSON) are translated in one place,
:func:`backends.base.translate_errors`, by type and status, never by the upstream's wording.

``failure`` says how a started stream failed, for failover accounting: ``cut`` (the body ended
early), ``malformed`` (an event that is not JSON), ``error_event`` (the upstream sent an error
inside the stream); routing's watchdog adds ``ttft`` and ``stall``.
"""

from __future__ import annotations

from typing import Any


class BackendError(Exception):
    """Base of the tree. ``status`` is the HTTP status to show a client (502 if none applies)."""

    default_status = 502
    default_type = "api_error"

    def __init__(
        self,
        backend: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        type: str | None = None,
        code: str | int | None = None,
        param: str | None = None,
        failure: str | None = None,
    ) -> None:
        super().__init__(message)
        self.failure = failure
        self.backend = backend
        self.message = message
        self.status = status or self.default_status
        self.retry_after = retry_after
        self.type = type or self.default_type
        self.code = code
        self.param = param
        # The rate-limit windows the failed response's headers reported (a 429 says the most).
        self.limits: dict[str, Any] = {}

    def __str__(self) -> str:
        return f"{self.backend}: {self.message} (status {self.status})"


class BackendUnavailable(BackendError):
    """The backend could not serve right now; trying another one is allowed."""

    default_status = 503
    default_type = "upstream_unavailable"


class BackendRejected(BackendError):
    """The upstream refused the request itself (4xx); retrying it elsewhere rarely helps."""

    default_status = 400
    default_type = "invalid_request_error"


class ContextOverflow(BackendRejected):
    """The conversation does not fit this backend's context window."""

    default_type = "context_length_exceeded"


class BackendProtocolError(BackendError):
    """The upstream broke the wire protocol: bad JSON, or an unfinished stream."""

    default_status = 502
    default_type = "upstream_protocol_error"
