"""The SSE relay: upstream chunks to the client as they arrive, never buffered.

Discipline (after aiohttp-sse, ``shared/design.md`` rule 4):

- The HTTP status is held back until the upstream produced its first event, so a failure
  before then reaches the client as a real status (a 429 with ``retry-after``, say). If the
  first event is slow, the response is committed within ``keepalive_s`` and SSE comments keep
  the connection alive while the upstream thinks.
- Per chunk the relay does no JSON work unless it must change the chunk: unchanged events are
  written as the upstream's own bytes.
- A clean end writes ``data: [DONE]``. A failure after the first byte writes one
  ``data: {"error": ...}`` event and ends *without* ``[DONE]``: a truncated answer must never
  look complete to Cline.
- ``CancelledError`` (the client left) is never swallowed; closing the chunk iterator closes
  the upstream connection, so generation stops at once.

What goes on the wire is the front's: a :class:`Wire` encodes the chunks, the normal end and
the failure. :class:`OpenAIWire` relays OpenAI's own bytes; the Anthropic front's wire
(:mod:`gateway.anthropic.wire`) translates each chunk into Messages events. The discipline
above is the relay's and holds for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol

import attrs
import orjson
from aiohttp import web
from aiohttp_sse import EventSourceResponse

from backends import BackendError, Chunk
from backends.clock import Clock, SystemClock
from gateway.errors import backend_error_body, error_body
from routing.events import Event, Failed, Outcome

DONE = b"data: [DONE]\n\n"


class RelayResponse(EventSourceResponse):
    """aiohttp-sse's response (headers, TCP user timeout); events are written as bytes the wire
    encoded (aiohttp-sse's send() would re-encode every event).

    aiohttp-sse starts a ping task per response; here one ticker pings every idle stream
    (:class:`ActiveStreams`), so a request costs no task beyond its handler's. ``ping`` is the
    front's keep-alive: an SSE comment for OpenAI clients.
    """

    ping = b": ping\n\n"

    async def prepare(self, request: web.BaseRequest) -> Any:
        if self.prepared:
            return self._payload_writer
        # aiohttp-sse's prepare() without its ping task. The TCP user timeout (aiohttp-sse >= 3)
        # makes the kernel drop a client that stops acknowledging what it is sent.
        set_user_timeout = getattr(self, "_set_tcp_user_timeout", None)
        if set_user_timeout is not None:
            set_user_timeout(request)
        writer = await web.StreamResponse.prepare(self, request)
        self.enable_chunked_encoding()
        return writer


class Wire(Protocol):
    """One front's encoding of a relayed stream. ``chunk`` gets each chunk with its finish reason
    and usage (None on most); it returns the bytes to write, or None for nothing."""

    response_class: type[RelayResponse]

    def opening(self) -> bytes: ...  # written when the response is committed

    def waiting(self) -> bytes: ...  # written if the first token is slow (after the opening)

    def chunk(self, chunk: Chunk, finish: str | None, usage: dict[str, Any] | None,
              tally: Outcome) -> bytes | None: ...

    def closing(self, usage: dict[str, Any] | None, tally: Outcome) -> bytes: ...  # the normal end

    def failure(self, body: dict[str, Any], status: int) -> bytes: ...  # the end that is not normal


class OpenAIWire:
    """Chat Completions chunks as the upstream sent them; the tail names what served the answer,
    usage is stripped unless the client asked for it, and the end is ``data: [DONE]``."""

    __slots__ = ("include_usage",)
    response_class = RelayResponse

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage

    def opening(self) -> bytes:
        return b""

    def waiting(self) -> bytes:
        return b": waiting for the first token\n\n"

    def chunk(self, chunk: Chunk, finish: str | None, usage: dict[str, Any] | None,
              tally: Outcome) -> bytes | None:
        if not (finish or usage):
            return b"data: " + chunk.raw + b"\n\n" if chunk.raw is not None else _event(chunk.data)
        # The tail of the stream: strip usage the client did not ask for (we always request
        # it upstream), and name what served the answer.
        data = chunk.data
        if usage and not self.include_usage:
            if not data.get("choices"):
                return None
            data = {k: v for k, v in data.items() if k != "usage"}
        return _event({**data, "model_used": tally.model_used})

    def closing(self, usage: dict[str, Any] | None, tally: Outcome) -> bytes:
        return DONE

    def failure(self, body: dict[str, Any], status: int) -> bytes:
        return _event(body)


def _event(data: Any) -> bytes:
    # JSON payloads never contain a raw newline, so no line splitting is needed (aiohttp-sse's
    # send() would re-encode every event).
    return b"data: " + orjson.dumps(data) + b"\n\n"


class ActiveStreams:
    """The relays in flight, so a shutdown can end them properly (with an error event, never a
    silent close that a client would take for a complete answer), and their keep-alive.

    One ticker, every ``keepalive_s / 2`` (the streams' own) while any stream is open, writes
    the front's ping to each committed stream that wrote nothing since the previous tick: a
    stream is never silent for ``keepalive_s``, a busy one is never pinged, and a request costs
    no ping task of its own. It also commits a stream whose first chunk is slow, so a request
    arms no timer of its own either.
    A stream whose socket buffer is backed up is skipped (its client is not reading, and a ping
    queued behind the rest would not reach it; the TCP user timeout ends it).
    """

    # Past this many unsent bytes a stream is backed up (aiohttp's own high-water mark is 64 KiB).
    BACKED_UP = 64 * 1024

    def __init__(self, clock: Clock | None = None) -> None:
        self.relays: set[StreamRelay] = set()
        self.clock = clock or SystemClock()
        self._ticking = False
        self._pinging: set[asyncio.Future[None]] = set()  # held: the loop keeps only weak references

    def __len__(self) -> int:
        return len(self.relays)

    def add(self, relay: StreamRelay) -> None:
        self.relays.add(relay)
        if not self._ticking:
            # The ticker is left to lapse rather than cancelled when the last stream ends: one
            # client's requests in sequence then share a timer instead of arming one each.
            self._ticking = True
            self.clock.call_later(relay.keepalive_s / 2, self._tick)

    def discard(self, relay: StreamRelay) -> None:
        self.relays.discard(relay)

    def _tick(self) -> None:
        self._ticking = False
        idle, interval = [], float("inf")
        for relay in self.relays:
            interval = min(interval, relay.keepalive_s)
            response = relay.response
            if response is None:
                # Not committed: its first chunk is slow. Past half a keep-alive interval, commit
                # it with the waiting comment, so no client waits keepalive_s for a first byte.
                if self.clock() - relay.started_at >= relay.keepalive_s / 2:
                    relay.commit_waiting()
                continue
            if relay.written == relay.ping_mark:
                transport = relay.request.transport
                if transport is not None and transport.get_write_buffer_size() < self.BACKED_UP:
                    idle.append(response)
            relay.ping_mark = relay.written
        if idle:
            pinging = asyncio.ensure_future(_ping(idle))  # one task per tick, for every idle stream
            self._pinging.add(pinging)
            pinging.add_done_callback(self._pinging.discard)
        if self.relays:
            self._ticking = True
            self.clock.call_later(interval / 2, self._tick)

    def abort_all(self, reason: str) -> None:
        for relay in list(self.relays):
            relay.abort(reason)


async def _ping(responses: list[RelayResponse]) -> None:
    for response in responses:
        # A stream that ended since the tick raises: RuntimeError for a write after the end.
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await response.write(response.ping)


@attrs.define
class StreamOutcome:
    """What happened to one relayed stream (for logs now, accounting later)."""

    status: str = "pending"  # "ok" | "error" | "cancelled"
    ttft_s: float | None = None
    chunks: int = 0
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    error: BackendError | None = None


class StreamRelay:
    """Relay one request's event stream (:mod:`routing.events`) to one client.

    Chunks are relayed; every other event is folded into ``tally`` (an
    :class:`routing.events.Outcome`), which also names what serves the stream: its ``backend``
    and ``reason`` when the response is committed (a fallback before then may change them), its
    ``model_used`` on the final chunks (after a failover it names both backends).
    ``headers_for(backend)`` adds headers that depend on the backend serving (at commit).

    >>> relay = StreamRelay(request, tally=Outcome.of(route), wire=OpenAIWire(include_usage=False),
    ...                     headers={"x-request-id": rid}, keepalive_s=10, active=streams)
    >>> outcome = await relay.run(router.stream(route, body).events())
    """

    __slots__ = ("request", "tally", "wire", "headers", "keepalive_s", "clock", "before_done", "active",
                 "headers_for", "task", "aborted", "response", "outcome",
                 "written", "ping_mark", "started_at", "first_pending", "keepalive")  # one per open stream

    def __init__(self, request: web.Request, *, tally: Outcome, wire: Wire, headers: dict[str, str],
                 keepalive_s: float, clock: Any = time.monotonic,
                 before_done: Callable[[], Awaitable[Any]] | None = None,
                 active: ActiveStreams,
                 headers_for: Callable[[str], dict[str, str]] | None = None) -> None:
        self.request = request
        self.tally = tally
        self.headers_for = headers_for
        self.headers = headers
        self.keepalive_s = keepalive_s
        self.wire = wire
        self.clock = clock
        # Runs after the last chunk and before [DONE]: the accounting write, so a client never
        # holds a complete answer that the ledger could still lose.
        self.before_done = before_done
        self.active = active
        self.task: asyncio.Task[Any] | None = None
        self.aborted: str | None = None
        self.response: RelayResponse | None = None
        self.outcome = StreamOutcome()
        self.written = 0  # events written, which the keep-alive ticker reads (ActiveStreams)
        self.ping_mark = -1
        self.started_at = 0.0  # set when run() starts, before the ticker can see this relay
        self.first_pending = False  # waiting for the first chunk, which the ticker may commit early
        self.keepalive: asyncio.Future[None] | None = None  # that early commit

    def abort(self, reason: str) -> None:
        """End this stream from outside (shutdown): an error event, then the upstream is closed."""
        self.aborted = reason
        if self.task is not None:
            self.task.cancel()

    async def run(self, events: AsyncIterator[Event]) -> StreamOutcome:
        """Relay until the end. Raises the BackendError if it happens before any byte was sent."""
        started = self.started_at = self.clock()
        self.task = asyncio.current_task()
        self.active.add(self)
        async with contextlib.aclosing(events) as upstream:
            try:
                first = await self._first(upstream)
                if first is not None:
                    self.outcome.ttft_s = self.clock() - started
                    await self._commit()
                    await self._relay(first)
                    async for event in upstream:
                        if type(event) is Chunk:  # the hot path: one type check per chunk
                            await self._relay(event)
                        else:
                            self._fold(event)
                await self._finish()
            except BackendError as exc:
                self.outcome.status, self.outcome.error = "error", exc
                if self.response is None:
                    raise  # nothing sent yet: the client gets a real HTTP status
                await self._send_error(exc)
            except (asyncio.CancelledError, ConnectionResetError):
                self.outcome.status = "cancelled"
                if self.aborted and self.response is not None:
                    self.outcome.status = "error"
                    await self._send_body(error_body(self.aborted, "service_unavailable", None, "shutting_down"), 503)
                raise
            finally:
                self.active.discard(self)
        return self.outcome

    def _fold(self, event: Event) -> None:
        self.tally.fold(event)
        if type(event) is Failed:
            raise event.error  # nothing normal may follow: run() ends the stream with an error

    async def _next_chunk(self, upstream: AsyncIterator[Event]) -> Chunk | None:
        async for event in upstream:
            if type(event) is Chunk:
                return event  # type: ignore[return-value]
            self._fold(event)
        return None

    async def _first(self, upstream: AsyncIterator[Event]) -> Chunk | None:
        """The first chunk. If it is slow to come, the keep-alive ticker commits the response
        meanwhile (:meth:`commit_waiting`): the wait arms no timer and starts no task of its own."""
        self.first_pending = True
        try:
            return await self._next_chunk(upstream)
        finally:
            self.first_pending = False
            if self.keepalive is not None:
                await self.keepalive  # the response must be fully committed before anything else is written

    def commit_waiting(self) -> None:
        """Commit now, with the wire's waiting comment, while the first chunk is still to come."""
        if self.first_pending and self.keepalive is None and self.response is None:
            self.keepalive = asyncio.ensure_future(self._commit(waiting=True))

    async def _commit(self, waiting: bool = False) -> None:
        if self.response is not None:
            return
        transport = self.request.transport
        if transport is None or transport.is_closing():
            # The client left while the upstream was thinking (a server that does not cancel
            # handlers on disconnect lets us get this far): a cancellation, not a server error.
            raise ConnectionResetError("the client left before the answer started")
        backend = self.tally.backend
        headers = {**self.headers, **(self.headers_for(backend) if self.headers_for else {}),
                   "x-glm-backend": backend, "x-glm-route-reason": self.tally.reason}
        response = self.wire.response_class(headers=headers, sep="\n", allow_all_methods=True)
        await response.prepare(self.request)
        self.response = response  # only once prepared: the clean-up paths write to it
        opening = self.wire.opening() + (self.wire.waiting() if waiting else b"")
        if opening:
            await response.write(opening)

    async def _relay(self, chunk: Chunk) -> None:
        data = chunk.data
        choices = data.get("choices")
        finish = choices[0].get("finish_reason") if choices else None
        usage = data.get("usage")
        self.outcome.chunks += 1
        if finish:
            self.outcome.finish_reason = finish
        if usage:
            self.outcome.usage = usage
        payload = self.wire.chunk(chunk, finish, usage, self.tally)
        if payload:
            assert self.response is not None
            self.written += 1
            await self.response.write(payload)

    async def _finish(self) -> None:
        await self._commit()
        assert self.response is not None
        self.outcome.status = "ok"
        if self.before_done is not None:
            await self.before_done()
        await self.response.write(self.wire.closing(self.outcome.usage, self.tally))
        await self.response.write_eof()
        self.outcome.status = "ok"

    async def _send_error(self, exc: BackendError) -> None:
        await self._send_body(backend_error_body(exc), exc.status)

    async def _send_body(self, body: dict[str, Any], status: int) -> None:
        """One final error event, then the end: no [DONE], so it cannot pass for complete."""
        assert self.response is not None
        with contextlib.suppress(ConnectionResetError):
            await self.response.write(self.wire.failure(body, status))
            await self.response.write_eof()
