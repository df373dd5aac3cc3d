"""What the supervisor tells its consumers: one typed event stream per request.

    async for event in router.stream(route, body):
        match event:
            case Chunk():      ...  # relay it (the hot path: a chunk is yielded as it came)
            case Started():    ...  # an attempt went to event.backend (first try, retry, fallback)
            case Serving():    ...  # event.backend's tokens reach the client from the next chunk
            case Switched():   ...  # an attempt failed, and what happens next
            case Hedged():     ...  # a hedge raced two backends; who won
            case Usage():      ...  # what one backend consumed, as reported or estimated
            case Finished():   ...  # the answer is complete
            case Failed():     ...  # it is not: no normal end may follow

The SSE relay, the non-streaming assembler and accounting each read this one stream; none of
them reads the router's state. :class:`Outcome` folds the events into what accounting records.
A consumer that stops reading early (the client left) closes the stream; the events that the
stream still owed (the consumed tokens of the backend it was cut off from) come from
:meth:`routing.supervisor.Supervision.epilogue`.
"""

from __future__ import annotations

from typing import Any, Mapping, Union

import attrs

from backends import BackendError, Chunk

BEFORE_FIRST_TOKEN, MID_REASONING, MID_CONTENT, MID_TOOL_CALL = (
    "before_first_token", "mid_reasoning", "mid_content", "mid_tool_call")


@attrs.frozen
class Started:
    """The request was sent to ``backend``: why it went there (the route's reason, ``fallback``,
    ``slow_local``), and the attempt's number within the request."""

    backend: str
    reason: str
    attempt: int


@attrs.frozen
class Switched:
    """An attempt on ``source`` failed with ``failure`` (ttft, stall, cut, malformed,
    error_event, slow_prefill, or unavailable/rejected before any stream) during ``phase``.
    ``target`` takes over (itself: a retry), by ``method``: retry, restart, prefill or
    instruction (a continuation of the partial answer)."""

    source: str
    target: str | None  # None: nowhere to go; Failed follows
    failure: str
    phase: str
    method: str | None
    error: str
    delay_s: float = 0.0

    @property
    def after_first_byte(self) -> bool:
        return self.phase != BEFORE_FIRST_TOKEN


@attrs.frozen
class Serving:
    """``backend``'s first content, reasoning or tool-call delta is the next chunk: from here on
    the client receives its tokens."""

    backend: str


@attrs.frozen
class Hedged:
    """A hedge started ``secondary`` because ``primary`` was slow; ``winner`` serves."""

    primary: str
    secondary: str
    winner: str


@attrs.frozen
class Usage:
    backend: str
    usage: Mapping[str, Any]
    estimated: bool


@attrs.frozen
class Finished:
    backend: str  # the one that ended the answer
    served_by: tuple[str, ...]  # every backend whose tokens reached the client, in order
    ttft_s: float | None  # request start -> first content/reasoning/tool-call delta


@attrs.frozen
class Failed:
    """The request failed. ``served_by`` empty: nothing reached the client, which then gets a
    real HTTP status; otherwise its stream ends with an error event."""

    error: BackendError
    served_by: tuple[str, ...]
    ttft_s: float | None


Event = Union[Chunk, Started, Serving, Switched, Hedged, Usage, Finished, Failed]


@attrs.define
class Outcome:
    """What happened to one request, folded from its events (one writer: :meth:`fold`).

    >>> outcome = Outcome("local", "simple")
    >>> outcome.fold(Started("cloud", "fallback", 2)); outcome.backend, outcome.reason
    ('cloud', 'fallback')
    """

    backend: str  # the backend last tried, then the one that finished
    reason: str
    failures: list[tuple[str, str]] = attrs.Factory(list)  # (backend, error) before any byte
    failovers: list[Switched] = attrs.Factory(list)  # switches after bytes reached the client
    hedge: Hedged | None = None
    usage: dict[str, Mapping[str, Any]] = attrs.Factory(dict)  # per backend, "estimated" marked
    served_by: tuple[str, ...] = ()
    ttft_s: float | None = None
    error: BackendError | None = None
    finished: bool = False

    @classmethod
    def of(cls, route: Any) -> Outcome:
        """The fold for a request about to run ``route`` (a :class:`routing.router.Route`)."""
        return cls(route.decision.primary, route.reason)

    @property
    def model_used(self) -> str:
        return "+".join(self.served_by) if self.served_by else self.backend

    def fold(self, event: Event) -> None:
        kind = type(event)
        if kind is Chunk:
            return
        if kind is Started:
            self.backend, self.reason = event.backend, event.reason
        elif kind is Switched:
            if event.after_first_byte:
                self.failovers.append(event)
            else:
                self.failures.append((event.source, event.error))
        elif kind is Serving:
            self.served_by = (*self.served_by, event.backend)
        elif kind is Hedged:
            self.hedge = event
        elif kind is Usage:
            self.usage[event.backend] = {**event.usage, "estimated": True} if event.estimated else event.usage
        elif kind is Finished:
            self.backend, self.served_by, self.ttft_s, self.finished = (event.backend, event.served_by,
                                                                        event.ttft_s, True)
        elif kind is Failed:
            self.served_by, self.ttft_s, self.error = event.served_by, event.ttft_s, event.error
