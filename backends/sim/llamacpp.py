"""A llama-server (llama.cpp) simulator: a real aiohttp server speaking its wire format.

Reproduces what protocols.md §2, §6.1 and the measurements of §8 describe:

* ``/health`` (503 "Loading model" while ``loading``; every route but ``/models`` too),
  ``/v1/models``, ``/props``, ``/slots`` (``?fail_on_no_slot=1``), ``/metrics`` (501 when off).
* Chat completions that accept unknown fields, refuse ``n>1``, answer an over-long prompt with a
  pre-stream HTTP 400 ``exceed_context_size_error`` (``Connection: close``, even for streams).
* Prompt processing (§8.x): with ``prefill_tokens_per_s`` set, the uncached prompt tokens take
  ``uncached / prefill_tokens_per_s`` s before the first token, in ``batch_tokens`` batches. A
  stream that asks ``return_progress: true`` then gets a role chunk carrying ``prompt_progress``
  ``{total, cache, processed, time_ms}`` at the start and after every batch (``processed``
  counts the cached tokens too, as llama-server's ``slot.prompt.tokens.size()``, so it ends at
  ``total``); its headers go out with the first of them. ``timings`` report that time.
* Prefill: a trailing assistant message is continued. Streams ECHO the prefill text in the first
  content delta (measured, §8); reasoning is off in prefill mode (reasoning_format forced none).
  Prefill with a thinking template is refused unless ``chat_template_kwargs.enable_thinking`` is
  false. Reasoning is also suppressed when a request sets enable_thinking false.
* Streams: role chunk, reasoning_content, content, tool calls (header, then ~8-char argument
  fragments), finish chunk; timings on the finish chunk, or with ``include_usage`` a ``choices: []``
  usage chunk that carries them; ``[DONE]``. Headers go out with the first result (the first
  token, or the first progress chunk), so a slow first token or an error before it looks exactly
  like llama-server (an error then is a plain HTTP error).
* After a streamed response the TCP connection is closed at once although the response said
  Keep-Alive (§8: a pooled client then writes its next request into a dead socket).
* ``n_slots`` concurrent generations; further requests queue (``requests_deferred``), never fail.
* Prompt cache: the longest common message prefix with any of the last ``prompt_cache_size``
  distinct prompts counts as cached (llama-server keeps one prompt per slot plus a host-memory
  prompt cache, so an interleaved second conversation does not evict the first). A prompt whose
  processing was cancelled is remembered only as far as it was processed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import string
import time
from collections.abc import AsyncIterator
from typing import Any

import attrs
import orjson
from aiohttp import web

from backends.sim.common import (
    Exchange,
    Plan,
    Script,
    SimServer,
    SseStream,
    arg_fragments,
    estimate_prompt_tokens,
    make_plan,
    message_text,
    pause,
    retry_after_text,
)
from backends.sim.llama_state import (
    BUILD_INFO,
    Counters,
    InfoRoutes,
    PromptCache,
    Slot,
    error_body,
    llama_error,
    rate,
)


@attrs.frozen
class _Turn:
    """Everything one response needs, decided before generation starts."""

    cid: str
    created: int
    plan: Plan
    prefill: str | None
    prompt_tokens: int
    cached_tokens: int
    include_usage: bool
    started: float
    slot: Slot
    messages: list
    return_progress: bool = False


class _Stream(SseStream):
    """llama-server's SSE response: the headers go out with the first result written.

    The role chunk rides with the first *token* result (llama-server adds it when
    ``n_decoded == 1``), also after progress results, which carry a role chunk of their own and
    are written with ``write_result`` (as is an error event: no role chunk precedes it).
    """

    def __init__(self, request: web.Request, headers: dict[str, str], role: bytes) -> None:
        super().__init__(request, headers, b"")
        self._role = role

    async def write(self, data: bytes) -> None:
        if self._role:
            data, self._role = self._role + data, b""
        await super().write(data)

    async def write_result(self, data: bytes) -> None:
        await super().write(data)


class LlamaCppSim(InfoRoutes, SimServer):
    """Simulated llama-server.

    >>> sim = LlamaCppSim(Script(content="Hi there"), tokens_per_s=None, n_ctx=4096)
    >>> base = await sim.start()          # "http://127.0.0.1:PORT/v1"
    >>> sim.push_faults(Fault.stall_after(2, seconds=1.0))
    >>> sim.prefill_tokens_per_s = 500    # prompt processing now takes uncached / 500 s
    >>> ...; await sim.stop()

    ``prefill_tokens_per_s`` and ``batch_tokens`` (n_batch) shape prompt processing; both are
    read per request, so they may be changed at any time. None (the default) keeps prompt
    processing out of the simulation: instant, and no ``prompt_progress`` chunks even when a
    request asks for them (the wire format as before); ``math.inf`` is instant *with* them.
    ``prompt_cache_size`` is how many distinct prompts the prompt cache keeps (1: only the
    previous request's, the simulator's behaviour before the cache was modelled).
    """

    def __init__(self, script: Script = Script(), *, tokens_per_s: float | None = 200.0,
                 host: str = "127.0.0.1", port: int = 0, n_ctx: int = 8192,
                 model_alias: str = "local-model", thinking: bool = False,
                 metrics: bool = True, loading: bool = False, n_slots: int = 4,
                 close_after_stream: bool = True, reset_on_reuse: bool = False,
                 prefill_tokens_per_s: float | None = None, batch_tokens: int = 2048,
                 prompt_cache_size: int = 8) -> None:
        super().__init__(script, tokens_per_s=tokens_per_s, host=host, port=port)
        self.n_ctx = n_ctx
        self.prefill_tokens_per_s = prefill_tokens_per_s
        self.batch_tokens = batch_tokens
        self.model_alias = model_alias
        self.thinking = thinking
        self.metrics = metrics
        self.loading = loading
        self.close_after_stream = close_after_stream
        # Deterministic variant of the quirk: keep the socket open after a stream, but reset
        # the next request sent on it before any response byte, i.e. the worst case of the race.
        self.reset_on_reuse = reset_on_reuse
        self._poisoned: set[asyncio.BaseTransport] = set()
        self._slots = [Slot(i) for i in range(n_slots)]
        self._slot_sem = asyncio.Semaphore(n_slots)
        self._deferred = 0
        self._counters = Counters()
        self._prompt_cache = PromptCache(prompt_cache_size)
        self._tasks = 0
        self._created = int(time.time())

    @property
    def prompt_cache_size(self) -> int:
        return self._prompt_cache.size

    @prompt_cache_size.setter
    def prompt_cache_size(self, size: int) -> None:
        self._prompt_cache.size = size

    def make_app(self) -> web.Application:
        @web.middleware
        async def gate(request: web.Request, handler: Any) -> web.StreamResponse:
            if request.transport in self._poisoned:
                self._poisoned.discard(request.transport)
                request.transport.abort()
                raise asyncio.CancelledError  # nothing may be written on a reset socket
            # While loading, llama-server's pre-routing middleware answers everything with 503,
            # except the model list, which newer builds let through (meta: null).
            if self.loading and request.path not in ("/models", "/v1/models"):
                if request.path.endswith("/chat/completions"):
                    # Logged (the fault queue is left alone: the request never got a slot).
                    self._record(request, Exchange(fault=None, started=time.monotonic(),
                                                   outcome="rejected"))
                return llama_error(503, "Loading model", "unavailable_error")
            try:
                return await handler(request)
            except web.HTTPNotFound:
                return llama_error(404)

        app = web.Application(middlewares=[gate])
        for prefix in ("", "/v1"):
            app.router.add_get(f"{prefix}/health", self._health)
            app.router.add_get(f"{prefix}/models", self._models)
            app.router.add_post(f"{prefix}/chat/completions", self._chat_entry)
        app.router.add_get("/props", self._props)
        app.router.add_get("/slots", self._slots_route)
        app.router.add_get("/metrics", self._metrics_route)
        return app

    # -- chat completions ----------------------------------------------------------------------
    async def _chat(self, request: web.Request, ex: Exchange) -> web.StreamResponse:
        if ex.fault_is("reset_before_headers"):
            await request.read()
            await self._abort(request, ex)
        if ex.fault_is("http_error"):
            ex.outcome = "fault"
            retry = ex.fault.retry_after
            return llama_error(ex.fault.status, headers=None if retry is None else {
                "retry-after": retry_after_text(retry)})
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            ex.outcome = "rejected"
            return llama_error(400, f"[json.exception.parse_error] {exc}")
        ex.body = body
        if (problem := self._problem(body)) is not None:
            ex.outcome = "rejected"
            return llama_error(400, problem, "invalid_request_error")
        messages = body["messages"]
        prompt_tokens = estimate_prompt_tokens(messages)
        if ex.fault_is("context_overflow") or prompt_tokens > self.n_ctx:
            ex.outcome = "fault" if ex.fault_is("context_overflow") else "rejected"
            n_prompt = max(prompt_tokens, self.n_ctx + 1)
            response = llama_error(
                400, f"request ({n_prompt} tokens) exceeds the available context size "
                     f"({self.n_ctx} tokens), try increasing it",
                "exceed_context_size_error", n_prompt_tokens=n_prompt, n_ctx=self.n_ctx)
            response.force_close()  # measured: llama-server sends Connection: close here
            return response

        prefill = message_text(messages[-1]) if messages[-1].get("role") == "assistant" else None
        script = self.script_for(body)
        content = script.content
        if prefill is not None and content.startswith(prefill):
            content = content[len(prefill):]
        thinking_off = _dict(body.get("chat_template_kwargs")).get("enable_thinking") is False
        limit = body.get("max_tokens") or body.get("max_completion_tokens") or body.get("n_predict")
        cap = self.n_ctx - prompt_tokens
        cap = min(cap, limit) if isinstance(limit, int) and limit >= 0 else cap
        plan = make_plan(script, content=content, reasoning=prefill is None and not thinking_off,
                         max_tokens=cap)
        stream_options = _dict(body.get("stream_options"))
        async with self._slot(ex) as slot:
            cached = self._prompt_cache.cached(messages, prompt_tokens) if body.get(
                "cache_prompt", True) else 0
            self._tasks += 1
            slot.id_task, slot.n_prompt_tokens = self._tasks, prompt_tokens
            slot.n_prompt_tokens_cache, slot.n_prompt_tokens_processed = cached, 0
            turn = _Turn(
                cid="chatcmpl-" + _random_id(32), created=int(time.time()), plan=plan,
                prefill=prefill, prompt_tokens=prompt_tokens, cached_tokens=cached,
                include_usage=bool(stream_options.get("include_usage")),
                started=time.monotonic(), slot=slot, messages=messages,
                return_progress=bool(body.get("stream")) and body.get("return_progress") is True)
            self._prompt_cache.remember(messages)
            if body.get("stream"):
                return await self._stream(request, ex, turn)
            return await self._complete(request, ex, turn)

    def _problem(self, body: Any) -> str | None:
        """llama-server's own request checks (§2.3, §2.6); unknown fields are fine."""
        if not isinstance(body, dict):
            return "request body must be a JSON object"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) for m in messages):
            return "'messages' is required and must be a non-empty array of objects"
        if body.get("n") not in (None, 1):
            return "Only one completion choice is allowed"
        if messages[-1].get("role") == "assistant":
            if len(messages) > 1 and messages[-2].get("role") == "assistant":
                return "Cannot have 2 or more assistant messages at the end of the list."
            kwargs = _dict(body.get("chat_template_kwargs"))
            if self.thinking and kwargs.get("enable_thinking") is not False:
                return "Assistant response prefill is incompatible with enable_thinking."
        return None

    @contextlib.asynccontextmanager
    async def _slot(self, ex: Exchange) -> AsyncIterator[Slot]:
        # Busy slots defer the task, never reject it (§2.10).
        self._deferred += 1
        try:
            await self._slot_sem.acquire()
        finally:
            self._deferred -= 1
        slot = next(s for s in self._slots if s.exchange is None)
        slot.exchange = ex
        try:
            yield slot
        finally:
            slot.exchange = None
            self._slot_sem.release()

    async def _process_prompt(self, turn: _Turn, out: _Stream | None) -> None:
        """Prompt processing of the uncached tokens, ``batch_tokens`` at a time.

        Each batch ends at ``start + done / prefill_tokens_per_s``: a deadline schedule, so
        sleep overhead does not add up. ``start`` (also the origin of ``time_ms``) is when
        processing began, after any slow_first_token wait. With ``out`` (return_progress) a
        progress chunk goes out first (processed = cache) and after every batch, the last one
        at processed = total. Sleeping is cancellable: a client that leaves frees the slot.
        """
        slot, speed = turn.slot, self.prefill_tokens_per_s
        uncached = turn.prompt_tokens - turn.cached_tokens
        if out is None and not speed:
            slot.n_prompt_tokens_processed = uncached
            return
        batch, done, start = max(1, int(self.batch_tokens)), 0, time.monotonic()
        try:
            if out is not None:
                await out.write_result(self._progress_chunk(turn, 0, start))
            while done < uncached:
                end = min(uncached, done + batch)
                if speed:
                    await asyncio.sleep(max(0.0, start + end / speed - time.monotonic()))
                slot.n_prompt_tokens_processed = done = end
                if out is not None:
                    await out.write_result(self._progress_chunk(turn, done, start))
        except (asyncio.CancelledError, ConnectionResetError):
            self._prompt_cache.forget_unprocessed(turn.messages, turn.cached_tokens + done)
            raise

    def _progress_chunk(self, turn: _Turn, done: int, start: float) -> bytes:
        """A role chunk with llama-server's ``prompt_progress`` (``processed`` includes cache)."""
        return self._chunk(turn, {"role": "assistant", "content": None}, prompt_progress={
            "total": turn.prompt_tokens, "cache": turn.cached_tokens,
            "processed": turn.cached_tokens + done,
            "time_ms": int((time.monotonic() - start) * 1000)})

    def _chunk(self, turn: _Turn, delta: dict | None, finish: str | None = None,
               **extra: Any) -> bytes:
        choices = [] if delta is None else [
            {"finish_reason": finish, "index": 0, "delta": delta}]
        return b"data: " + orjson.dumps({
            "choices": choices, "created": turn.created, "id": turn.cid,
            "model": self.model_alias, "system_fingerprint": BUILD_INFO,
            "object": "chat.completion.chunk", **extra}) + b"\n\n"

    def _steps(self, turn: _Turn) -> list[tuple[int, bytes]]:
        plan = turn.plan
        steps = [(0, self._chunk(turn, {"content": turn.prefill}))] if turn.prefill else []
        steps += [(1, self._chunk(turn, {"reasoning_content": t})) for t in plan.reasoning]
        steps += [(1, self._chunk(turn, {"content": t})) for t in plan.content]
        for i, call in enumerate(plan.tool_calls):
            steps.append((0, self._chunk(turn, {"tool_calls": [{
                "index": i, "id": "call_" + _random_id(32), "type": "function",
                "function": {"name": call["name"], "arguments": ""}}]})))
            steps += [(1, self._chunk(turn, {"tool_calls": [
                {"index": i, "function": {"arguments": frag}}]}))
                for frag in arg_fragments(call.get("arguments", ""))]
        return steps

    async def _stream(self, request: web.Request, ex: Exchange, turn: _Turn) -> web.StreamResponse:
        out = _Stream(request, {"Content-Type": "text/event-stream", "Server": "llama.cpp",
                                "Keep-Alive": "timeout=5, max=100"},
                      self._chunk(turn, {"role": "assistant", "content": None}))
        if ex.fault_is("slow_first_token"):
            # Silent, as a wedged or deferred server: no headers yet, not even progress chunks.
            await pause(ex.fault.seconds)
        # Prompt processing: no headers yet either, unless progress chunks are asked for.
        progress = turn.return_progress and self.prefill_tokens_per_s is not None
        await self._process_prompt(turn, out if progress else None)
        stop = await self._generate(request, ex, self._steps(turn), out)
        if stop is not None:
            ex.outcome = "fault"
            if not out.started:
                # The first result is an error: llama-server answers a plain HTTP error.
                return llama_error(stop.status)
            await out.write_result(b"data: " + orjson.dumps(error_body(stop.status)) + b"\n\n")
        else:
            usage, timings = self._usage(ex, turn)
            if turn.include_usage:
                await out.write(self._chunk(turn, {}, turn.plan.finish_reason))
                await out.write(self._chunk(turn, None, usage=usage, timings=timings))
            else:
                await out.write(self._chunk(turn, {}, turn.plan.finish_reason, timings=timings))
            if not ex.fault_is("no_done"):
                await out.write(b"data: [DONE]\n\n")
            else:
                await pause(ex.fault.seconds)
        response = await out.finish()
        if self.reset_on_reuse and request.transport is not None:
            self._poisoned.add(request.transport)
            asyncio.get_running_loop().call_later(30, self._poisoned.discard, request.transport)
        elif self.close_after_stream and request.transport is not None:
            # Measured quirk (§8): the socket dies after a stream although Keep-Alive was sent.
            # Closing on the next loop turn (all bytes are queued; close() flushes them) makes a
            # pooled client that reuses the socket at once fail exactly as measured there:
            # "ClientOSError: Can not write request body", before any response byte.
            asyncio.get_running_loop().call_soon(request.transport.close)
        return response

    async def _complete(self, request: web.Request, ex: Exchange, turn: _Turn) -> web.Response:
        if ex.fault_is("slow_first_token"):
            await pause(ex.fault.seconds)
        await self._process_prompt(turn, None)
        stop = await self._generate(request, ex, [(1, b"")] * turn.plan.completion_tokens, None)
        if stop is not None:
            ex.outcome = "fault"
            if stop.name == "malformed_after":
                return web.Response(body=b'{"choices": [', content_type="application/json")
            return llama_error(stop.status)
        plan = turn.plan
        message: dict[str, Any] = {"role": "assistant",
                                   "content": (turn.prefill or "") + "".join(plan.content)}
        if plan.reasoning:
            message["reasoning_content"] = "".join(plan.reasoning)
        if plan.tool_calls:
            message["tool_calls"] = [
                {"type": "function", "id": "call_" + _random_id(32),
                 "function": {"name": c["name"], "arguments": c.get("arguments", "")}}
                for c in plan.tool_calls]
            message["content"] = message["content"] or None
        usage, timings = self._usage(ex, turn)
        return web.json_response({
            "choices": [{"finish_reason": plan.finish_reason, "index": 0, "message": message}],
            "created": turn.created, "model": self.model_alias,
            "system_fingerprint": BUILD_INFO, "object": "chat.completion", "usage": usage,
            "id": turn.cid, "timings": timings}, dumps=lambda o: orjson.dumps(o).decode())

    def _usage(self, ex: Exchange, turn: _Turn) -> tuple[dict, dict]:
        """Usage and timings; also feeds the /metrics counters (called once per success)."""
        now = time.monotonic()
        first = ex.first_token_at or now
        prompt_ms = (first - turn.started) * 1000
        predicted_ms = (now - first) * 1000
        prompt_n = max(1, turn.prompt_tokens - turn.cached_tokens)
        predicted_n = ex.tokens_sent
        c = self._counters
        c.prompt_tokens_total += prompt_n
        c.prompt_seconds_total += prompt_ms / 1000
        c.tokens_predicted_total += predicted_n
        c.tokens_predicted_seconds_total += predicted_ms / 1000
        c.n_decode_total += predicted_n
        usage = {"completion_tokens": predicted_n, "prompt_tokens": turn.prompt_tokens,
                 "total_tokens": predicted_n + turn.prompt_tokens,
                 "prompt_tokens_details": {"cached_tokens": turn.cached_tokens}}
        timings = {
            "cache_n": turn.cached_tokens, "prompt_n": prompt_n, "prompt_ms": prompt_ms,
            "prompt_per_token_ms": prompt_ms / prompt_n,
            "prompt_per_second": rate(prompt_n, prompt_ms / 1000),
            "predicted_n": predicted_n, "predicted_ms": predicted_ms,
            "predicted_per_token_ms": predicted_ms / predicted_n if predicted_n else 0.0,
            "predicted_per_second": rate(predicted_n, predicted_ms / 1000)}
        return usage, timings


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _random_id(n: int) -> str:
    return "".join(random.choices(string.ascii_letters + string.digits, k=n))
