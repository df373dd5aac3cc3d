"""The Backend interface and the OpenAI-compatible wire plumbing every kind shares.

A backend is a small class around one injected, pooled ``aiohttp.ClientSession`` (the app
owns and closes it). Kinds override a few hooks for their wire quirks:

- :meth:`Backend.upstream_body` shapes the request for the upstream;
- :meth:`Backend.normalise_chunk` / :meth:`Backend.normalise_completion` bring responses to the
  OpenAI/llama.cpp field names Cline reads;
- :meth:`HTTPBackend.retry_after_hint` and :meth:`HTTPBackend.read_limits` read rate-limit
  headers; the readings travel on the response's first chunk (``Chunk.limits``) or its error.

Example::

    backend = LlamaCpp("local", cfg.backends["local"], session)
    async with contextlib.aclosing(backend.stream(body)) as chunks:
        async for chunk in chunks:
            ...  # chunk.data is the parsed event, chunk.raw its bytes if unchanged
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from typing import Any, AsyncIterator, Callable, ClassVar, Iterator, Mapping

import aiohttp
import orjson

from backends.clock import Clock, SystemClock, as_clock
from backends.errors import (
    BackendError,
    BackendProtocolError,
    BackendRejected,
    BackendUnavailable,
    ContextOverflow,
)
from backends.events import Chunk, HeaderReadings, Health, RateLimit, progress_chunk
from backends.protocol import Capabilities
from backends.sse import SSEDecoder
from config.schema import BackendConfig

# Error `type`/`code` values upstreams use for "prompt too long" (llama.cpp, OpenAI, Cerebras).
CONTEXT_OVERFLOW_MARKERS = frozenset({"exceed_context_size_error", "context_length_exceeded"})


class HTTPBackend:
    """An upstream that speaks OpenAI Chat Completions over HTTP: implements
    :class:`backends.protocol.Backend`. Subclass per wire dialect."""

    kind: ClassVar[str] = "openai"
    # Streams prefill progress when asked (llama-server's return_progress): the first-token
    # watchdog then tells a long prefill that is progressing from a stall.
    reports_progress: ClassVar[bool] = False
    keepalive_timeout_s: ClassVar[float] = 15.0
    end_of_body_grace_s: ClassVar[float] = 2.0

    def __init__(self, name: str, cfg: BackendConfig, session: aiohttp.ClientSession,
                 clock: Clock | Callable[[], float] | None = None) -> None:
        self.name = name
        # The app's one clock: it stamps rate-limit readings and health, and times the grace
        # an answered body gets to end.
        self.clock = as_clock(clock) if clock is not None else SystemClock()
        self.cfg = cfg
        self.session = session
        self._url = cfg.base_url.rstrip("/")
        self._caps = Capabilities.of(cfg, progress=self.reports_progress)
        # Whether this kind reads rate-limit headers at all (most upstreams send none).
        self._reads_limits = type(self).read_limits is not HTTPBackend.read_limits
        def timeout(sock_read: float | None) -> aiohttp.ClientTimeout:
            return aiohttp.ClientTimeout(total=None, connect=cfg.connect_timeout_s,
                                         sock_connect=cfg.connect_timeout_s, sock_read=sock_read)

        self._timeout = timeout(cfg.read_timeout_s)
        # Streams are watched per delta (routing.watch: first-token and stall timeouts), which
        # is stricter than a socket-silence timeout; aiohttp's would re-arm a timer per read.
        watched = max(cfg.first_token_timeout_s, cfg.stall_timeout_s) <= cfg.read_timeout_s
        self._stream_timeout = timeout(None if watched else cfg.read_timeout_s)
        self._headers = {"Content-Type": "application/json", **cfg.headers}
        if cfg.api_key:
            self._headers["Authorization"] = f"Bearer {cfg.api_key}"

    def __repr__(self) -> str:  # never show the key
        return f"<{type(self).__name__} {self.name} {self._url} model={self.cfg.model}>"

    @classmethod
    def make_session(cls) -> aiohttp.ClientSession:
        """The pooled session for this kind; the app creates it and closes it on shutdown."""
        # No connection cap: every client stream holds one upstream connection, and a
        # silent cap (aiohttp's default is 100) would queue streams invisibly.
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=cls.keepalive_timeout_s)
        return aiohttp.ClientSession(connector=connector)

    # --- declared capabilities -------------------------------------------------------------
    @property
    def tier(self) -> str:
        return self.cfg.tier

    @property
    def caps(self) -> Capabilities:
        return self._caps

    # --- hooks for wire dialects -----------------------------------------------------------
    def upstream_body(self, body: Mapping[str, Any], stream: bool) -> dict[str, Any]:
        """The request as this upstream should see it. ``body`` is never mutated."""
        out = dict(body)
        out["model"] = self.cfg.model
        out["stream"] = stream
        if stream:
            # Usage is always requested: accounting needs it. The gateway strips it again
            # for clients that did not ask.
            out["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
            if self.reports_progress:
                out["return_progress"] = True  # stripped again for clients that did not ask
        else:
            out.pop("stream_options", None)
        if not self.cfg.supports_images:
            # Routing sends image turns to a backend that takes images when there is one; when
            # none does, the text still gets through instead of a validation error upstream.
            out["messages"] = [without_images(m) for m in body.get("messages") or ()]
        cap = self.cfg.max_output_tokens
        if cap:
            for key in ("max_tokens", "max_completion_tokens"):
                if isinstance(out.get(key), int) and out[key] > cap:
                    out[key] = cap
        return out

    def continuation_request(self, body: Mapping[str, Any], partial: str, prefill: bool,
                             prompt: str) -> dict[str, Any]:
        """The request that makes this backend continue a partial answer another one started.

        ``prefill``: the partial answer as a trailing assistant message, which a backend with
        ``supports_prefill`` continues. Otherwise the partial answer and then ``prompt``, a user
        message asking it to go on. No fresh reasoning mid-answer (GLM on Cerebras thinks first).
        """
        out = dict(body)
        partial_message = {"role": "assistant", "content": partial}
        tail = [partial_message] if prefill else [partial_message, {"role": "user", "content": prompt}]
        out["messages"] = [*body["messages"], *tail]
        out["reasoning_effort"] = "none"
        return out

    def normalise_chunk(self, data: dict[str, Any]) -> bool:
        """Rename fields in place to the OpenAI/llama.cpp names; True if anything changed."""
        return False

    def normalise_completion(self, data: dict[str, Any]) -> dict[str, Any]:
        return data

    def retry_after_hint(self, headers: Mapping[str, str]) -> float | None:
        """Seconds to wait after a 429 that carried no ``retry-after``, from other headers."""
        return None

    def read_limits(self, headers: Mapping[str, str]) -> dict[str, RateLimit]:
        """The rate-limit windows a response's headers report, per "<requests|tokens>-<minute|
        hour|day>", for routing to stop before a budget runs out. None, for most upstreams."""
        return {}

    # --- operations ------------------------------------------------------------------------
    async def stream(self, body: Mapping[str, Any]) -> AsyncIterator[Chunk]:
        """Stream one completion as :class:`Chunk` events.

        Ends normally at ``[DONE]``, or as soon as the stream has both a ``finish_reason``
        and usage (Cerebras sends no ``[DONE]``); raises :class:`BackendProtocolError` if the
        body ends before a ``finish_reason``. Closing the generator closes the upstream
        connection, which is how a client disconnect stops generation upstream.
        """
        payload = self.upstream_body(body, stream=True)
        keep_progress = body.get("return_progress") is True
        with translate_errors(self):
            resp = await self._send(payload, stream=True)
            complete = False
            try:
                await self._check(resp)
                # The headers' readings ride on the first chunk, read when routing looks.
                limits = HeaderReadings(self.read_limits, resp.headers) if self._reads_limits else None
                # One generator from the socket to the chunk: a generator layer per chunk (this
                # was two) costs more than the chunk's parse.
                decoder = SSEDecoder()
                finished = usage = ended = False
                while not ended:
                    piece = await resp.content.readany()
                    if not piece:
                        ended = True
                        piece = b"\n\n" if decoder.pending else b""  # flush a final unterminated event
                    for event in decoder.feed(piece):
                        if event.data == b"[DONE]":
                            complete = True
                            return
                        data = self._parse(event)
                        if "prompt_progress" in data:
                            chunk = progress_chunk(data, event.data, keep_progress)
                        else:
                            changed = self.normalise_chunk(data)
                            choices = data.get("choices")
                            if choices and choices[0].get("finish_reason"):
                                finished = True
                            if data.get("usage"):
                                usage = True
                            chunk = Chunk(data, None if changed else event.data)
                        if limits is not None:
                            chunk, limits = chunk._replace(limits=limits), None
                        yield chunk
                        if finished and usage:
                            complete = True
                            return  # complete: nothing useful can follow (Cerebras never sends [DONE])
                if not finished:
                    raise BackendProtocolError(self.name, "stream ended before finish_reason or [DONE]", failure="cut")
                complete = True
            finally:
                self._finish_stream(resp, complete)

    async def complete(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """One non-streamed completion, normalised."""
        payload = self.upstream_body(body, stream=False)
        with translate_errors(self):
            resp = await self._send(payload)
            async with resp:
                await self._check(resp)
                data = orjson.loads(await resp.read())
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise BackendProtocolError(self.name, "completion body is not a chat.completion object")
        return self.normalise_completion(data)

    async def models(self) -> list[dict[str, Any]]:
        with translate_errors(self):
            async with self.session.get(f"{self._url}/models", headers=self._headers,
                                        timeout=self._timeout) as resp:
                await self._check(resp)
                data = orjson.loads(await resp.read())
        return list(data.get("data") or []) if isinstance(data, dict) else []

    async def context_limit(self) -> int | None:
        """The context the running server really has, if it can tell (llama.cpp's /props)."""
        return None

    async def slots(self) -> tuple[int, int] | None:
        """(busy, total) generation slots, if the server tells (llama.cpp's /slots)."""
        return None

    async def health(self) -> Health:
        """Cheapest call that proves the upstream answers: its model list."""
        try:
            await self.models()
        except BackendError as exc:
            return Health("down", exc.message, self.clock())
        return Health("ok", "", self.clock())

    # --- plumbing --------------------------------------------------------------------------
    async def _send(self, payload: dict[str, Any], stream: bool = False) -> aiohttp.ClientResponse:
        """POST and wait for the response headers, at most ``headers_timeout_s``."""
        # A timer on the one clock rather than asyncio.timeout(), whose context manager costs two
        # coroutines and a reschedule per request, on the way to the first byte. The same rules:
        # only our own cancellation becomes the timeout, any other is passed on.
        task = asyncio.current_task()
        assert task is not None
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        cancelling = task.cancelling()
        timer = self.clock.call_later(self.cfg.headers_timeout_s, expire)
        try:
            return await self._post(payload, self._stream_timeout if stream else self._timeout)
        except asyncio.CancelledError:
            if not expired or task.uncancel() > cancelling:
                raise
            raise BackendUnavailable(
                self.name, f"{self.name} sent no response within {self.cfg.headers_timeout_s:g}s",
                status=504) from None
        finally:
            timer.cancel()

    async def _post(self, payload: dict[str, Any], timeout: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
        # The body lives as long as the stream. orjson's output keeps its growth buffer (4 KB
        # for the smallest body), so it is copied to its exact size: 4 KB less per open stream.
        body = bytes(memoryview(orjson.dumps(payload)))
        return await self.session.post(f"{self._url}/chat/completions", data=body, headers=self._headers,
                                       timeout=timeout)

    def _finish_stream(self, resp: aiohttp.ClientResponse, complete: bool) -> None:
        if not complete:
            # Abandoned mid-body (client gone, a failover, an error): drop the socket, so the
            # upstream sees the disconnect at once and stops generating.
            resp.close()
        elif resp.content.at_eof():
            resp.release()  # back to the pool: the next stream skips a TCP (and TLS) handshake
        else:
            # The answer is complete but the body's last bytes (Cerebras sends no [DONE]; the
            # chunked terminator may trail) are still on the way. aiohttp pools the socket by
            # itself when they arrive; an upstream that never ends the body loses it here.
            self.clock.call_later(self.end_of_body_grace_s, resp.close)

    async def _check(self, resp: aiohttp.ClientResponse) -> None:
        """Raises the response's error, carrying its rate-limit readings, if it failed."""
        if resp.status < 400:
            return
        limits = self.read_limits(resp.headers)
        raw = await resp.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = raw.decode("utf-8", "replace")[:500]
        error = self.error_from(resp.status, body, resp.headers)
        error.limits = limits
        raise error

    def _parse(self, event: Any) -> dict[str, Any]:
        """One SSE event's JSON object; raises the backend's error for an error event."""
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            raise BackendProtocolError(
                self.name, f"malformed event: {event.data[:120]!r}", failure="malformed") from None
        if not isinstance(data, dict):
            raise BackendProtocolError(self.name, "event is not a JSON object", failure="malformed")
        if data.get("error") or event.event == b"error":
            status = data.get("status_code")
            error = self.error_from(status if isinstance(status, int) else None, data, {})
            error.failure = "error_event"
            raise error
        return data

    def error_from(self, status: int | None, body: Any, headers: Mapping[str, str]) -> BackendError:
        """Map an upstream error (HTTP status + body, or an in-stream error event) to the tree.

        The one place statuses become error classes; bodies only supply the message.
        """
        err = body.get("error") if isinstance(body, dict) else None
        if not isinstance(err, dict):
            # Cerebras sends {message, type, param, code} with no "error" wrapper.
            err = body if isinstance(body, dict) else {"message": str(body or "")}
        code = err.get("code")
        if status is None:
            status = code if isinstance(code, int) and 400 <= code < 600 else 502
        message = str(err.get("message") or f"upstream answered HTTP {status}")
        kind = err.get("type") if isinstance(err.get("type"), str) else None
        retry_after = parse_retry_after(headers)
        if retry_after is None and status == 429:
            retry_after = self.retry_after_hint(headers)
        info = dict(status=status, retry_after=retry_after, type=kind, code=code,
                    param=err.get("param") if isinstance(err.get("param"), str) else None)
        if kind in CONTEXT_OVERFLOW_MARKERS or code in CONTEXT_OVERFLOW_MARKERS:
            return ContextOverflow(self.name, message, **{**info, "status": 400})
        if status in (401, 402, 403, 404):
            # The gateway's own key, plan or model id is wrong upstream. That is not the
            # client's fault, and another backend may well serve the request.
            return BackendUnavailable(
                self.name, f"{self.name} refused the gateway's request (HTTP {status}): {message}",
                **{**info, "status": 502})
        if status == 429 or status == 408 or status >= 500:
            return BackendUnavailable(self.name, message, **info)
        return BackendRejected(self.name, message, **info)


def without_images(message: Any) -> Any:
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list) or all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return message
    text = [p for p in content if isinstance(p, dict) and p.get("type") == "text"]
    return {**message, "content": text or [{"type": "text", "text": "[image omitted]"}]}


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """``retry-after-ms``, then ``retry-after`` as delta seconds or an HTTP date."""
    value = headers.get("retry-after-ms")
    if value:
        with contextlib.suppress(ValueError):
            return max(0.0, float(value) / 1000)
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    return None


@contextlib.contextmanager
def translate_errors(backend: HTTPBackend) -> Iterator[None]:
    """Turn foreign exceptions into the backend error tree (by type, never by text)."""
    name = backend.name
    try:
        yield
    except BackendError:
        raise
    except asyncio.TimeoutError:  # also aiohttp's ServerTimeoutError / ConnectionTimeoutError
        raise BackendUnavailable(name, f"{name} timed out", status=504) from None
    except aiohttp.ClientPayloadError as exc:
        raise BackendProtocolError(name, f"{name} response body was cut: {exc}", failure="cut") from None
    except (aiohttp.ClientConnectionError, OSError) as exc:
        raise BackendUnavailable(name, f"{name} connection failed: {type(exc).__name__}",
                                 status=502) from None
    except orjson.JSONDecodeError:
        raise BackendProtocolError(name, f"{name} sent a body that is not JSON") from None

