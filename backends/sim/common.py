"""Shared machinery of the llama-server and Cerebras simulators: Script, Fault, RecordedRequest,
tokenising, pacing, and SimServer (server lifecycle, fault queue, request log, token loop).

Token accounting (both sims): one reasoning or content token is one ``\\s*\\S+`` piece of text;
a tool call costs one token per ~8-character fragment of its ``arguments`` (at least one).
``completion_tokens`` is the number of such tokens actually generated; an echoed prefill is not.
Outcomes: "fault" means a fault *ended* the request (cut, reset, error event, HTTP error, forced
overflow); a request that merely stalled, got a malformed line or missed ``[DONE]`` is "completed"
with ``fault`` set to the fault's name.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import deque
from typing import Any

import attrs
import orjson
from aiohttp import web

_TOKEN_RE = re.compile(r"\s*\S+")
ARG_FRAGMENT_CHARS = 8
MALFORMED_EVENT = b'data: {"choices": [\n\n'
# Faults that fire inside the token loop once `after_tokens` tokens have been generated.
_IN_LOOP = frozenset({"stall_after", "cut_after", "malformed_after", "error_event_after"})
# Requests that ask for this JSON schema get the judge's verdict instead of the script, so the
# gateway's model judge (routing.judge) can be tested deterministically.
JUDGE_SCHEMA = "task_complexity"
# How long a handler waits for the cancellation that follows transport.abort(); with
# handler_cancellation=True it arrives on the next loop iteration, so this is only a safety net.
_ABORT_GRACE_S = 10.0


@attrs.frozen
class Script:
    """What the simulated model answers.

    >>> Script(content="4", reasoning="2+2 is 4", tool_calls=({"name": "f", "arguments": "{}"},))
    """

    content: str = "Hello! This is a simulated answer."
    reasoning: str = ""
    tool_calls: tuple[dict, ...] = attrs.field(default=(), converter=tuple)
    finish_reason: str | None = None

    def final_finish_reason(self) -> str:
        return self.finish_reason or ("tool_calls" if self.tool_calls else "stop")


@attrs.frozen
class Fault:
    """A named misbehaviour for one request. Build it with the classmethods.

    >>> sim.push_faults(Fault.cut_after(3), None, Fault.http_error(429, retry_after=2))

    Streams: slow_first_token delays the first delta (llama: the headers too); stall_after
    pauses after n tokens (math.inf: until the client leaves); cut_after aborts the TCP
    connection; malformed_after inserts ``data: {"choices": [`` and goes on; error_event_after
    sends the backend's in-stream error and ends without [DONE] (llama with no token sent yet:
    a plain HTTP error, as the real server answers when its first result is an error); no_done
    omits [DONE]. Non-streamed answers: delays apply alike, cut_after drops the connection
    before any byte, malformed_after returns a truncated JSON body, error_event_after an HTTP
    error. http_error, reset_before_headers and context_overflow act before generation.
    """

    name: str
    after_tokens: int = 0
    seconds: float = 0.0
    status: int = 0
    retry_after: float | None = None

    @classmethod
    def slow_first_token(cls, seconds: float) -> Fault:
        return cls("slow_first_token", seconds=seconds)

    @classmethod
    def stall_after(cls, n: int, seconds: float = math.inf) -> Fault:
        return cls("stall_after", after_tokens=n, seconds=seconds)

    @classmethod
    def cut_after(cls, n: int) -> Fault:
        return cls("cut_after", after_tokens=n)

    @classmethod
    def malformed_after(cls, n: int) -> Fault:
        return cls("malformed_after", after_tokens=n)

    @classmethod
    def error_event_after(cls, n: int, status: int = 500) -> Fault:
        return cls("error_event_after", after_tokens=n, status=status)

    @classmethod
    def http_error(cls, status: int, retry_after: float | None = None) -> Fault:
        return cls("http_error", status=status, retry_after=retry_after)

    @classmethod
    def reset_before_headers(cls) -> Fault:
        return cls("reset_before_headers")

    @classmethod
    def no_done(cls, seconds: float = math.inf) -> Fault:
        """Finish (finish_reason and usage sent) but omit [DONE] and keep the connection open
        for ``seconds`` (inf: until the client leaves), as a wedged upstream would."""
        return cls("no_done", seconds=seconds)

    @classmethod
    def context_overflow(cls) -> Fault:
        return cls("context_overflow")


@attrs.frozen
class RecordedRequest:
    """One chat-completions request as the simulator saw it, logged when it ended."""

    path: str
    method: str
    headers: dict[str, str]
    body: Any
    fault: str | None
    outcome: str  # completed | cancelled | fault | rejected | error
    started: float
    ended: float
    tokens_sent: int
    peer: str = ""  # the client's host:port: the same one twice means a reused connection


@attrs.define
class Exchange:
    """Mutable per-request state while a handler runs; frozen into a RecordedRequest at the end."""

    fault: Fault | None
    started: float
    body: Any = None
    outcome: str | None = None
    tokens_sent: int = 0
    fault_fired: bool = False
    first_token_at: float | None = None
    ended: float | None = None

    def fault_is(self, name: str) -> bool:
        return self.fault is not None and self.fault.name == name


@attrs.frozen
class Plan:
    """The tokens one response will carry, decided before anything is sent."""

    reasoning: tuple[str, ...]
    content: tuple[str, ...]
    tool_calls: tuple[dict, ...]
    finish_reason: str

    @property
    def completion_tokens(self) -> int:
        calls = sum(len(arg_fragments(c.get("arguments", ""))) for c in self.tool_calls)
        return len(self.reasoning) + len(self.content) + calls


def tokenize(text: str) -> list[str]:
    """Split text so that ``"".join(tokenize(t)) == t`` (trailing blanks ride on the last token)."""
    tokens = _TOKEN_RE.findall(text)
    if not tokens:
        return [text] if text else []
    # Matches are contiguous from index 0, so only trailing whitespace is left over.
    tokens[-1] += text[sum(map(len, tokens)):]
    return tokens


def arg_fragments(arguments: str) -> list[str]:
    """Tool-call arguments in the ~8-character pieces llama-server streams them in."""
    step = ARG_FRAGMENT_CHARS
    return [arguments[i:i + step] for i in range(0, len(arguments), step)] or [""]


def message_text(message: Any) -> str:
    """Text of a message's content: a string, or the text parts of a list (images count 0)."""
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content
                       if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def estimate_prompt_tokens(messages: Any) -> int:
    """Deterministic prompt size: characters of all message text // 4, at least 1."""
    if not isinstance(messages, list):
        return 1
    return max(1, sum(len(message_text(m)) for m in messages) // 4)


def make_plan(script: Script, *, content: str, reasoning: bool,
              max_tokens: int | None) -> Plan:
    """Tokenise the script; cut at max_tokens (finish "length", tool calls dropped)."""
    r = tokenize(script.reasoning) if reasoning else []
    c = tokenize(content)
    calls = tuple(script.tool_calls)
    plan = Plan(tuple(r), tuple(c), calls, script.final_finish_reason())
    if max_tokens is None or plan.completion_tokens <= max_tokens:
        return plan
    budget = max(0, max_tokens)
    r_kept = r[:budget]
    c_kept = c[:budget - len(r_kept)]
    return Plan(tuple(r_kept), tuple(c_kept), (), "length")


def retry_after_text(seconds: float) -> str:
    """Header text for retry-after: integral values without a fraction, others as floats."""
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


async def pause(seconds: float) -> None:
    """Sleep; math.inf means until the handler is cancelled (the client left)."""
    if math.isinf(seconds):
        await asyncio.get_running_loop().create_future()
    elif seconds > 0:
        await asyncio.sleep(seconds)


class Pacer:
    """Spaces tokens 1/tokens_per_s apart on a deadline schedule (no drift from sleep overhead).

    With tokens_per_s=None nothing sleeps, but control returns to the loop every few tokens so a
    benchmark stream cannot starve other tasks.
    """

    YIELD_EVERY = 4

    def __init__(self, tokens_per_s: float | None) -> None:
        self._delay = 1.0 / tokens_per_s if tokens_per_s else None
        self._next: float | None = None
        self._count = 0

    def restart(self) -> None:
        """After a stall: continue at the normal rate instead of bursting to catch up."""
        self._next = None

    async def tick(self) -> None:
        self._count += 1
        if self._delay is None:
            if self._count % self.YIELD_EVERY == 0:
                await asyncio.sleep(0)
            return
        now = time.monotonic()
        self._next = (now if self._next is None else self._next) + self._delay
        await asyncio.sleep(max(0.0, self._next - now))


class SseStream:
    """A text/event-stream response that is prepared lazily, on the first write.

    llama-server answers only once the first result exists, so its headers go out with the first
    token; Cerebras calls start() at once.
    """

    def __init__(self, request: web.Request, headers: dict[str, str], preamble: bytes) -> None:
        self._request = request
        self._headers = headers
        self._preamble = preamble
        self.response: web.StreamResponse | None = None

    @property
    def started(self) -> bool:
        return self.response is not None

    async def start(self) -> web.StreamResponse:
        if self.response is None:
            self.response = web.StreamResponse(headers=self._headers)
            await self.response.prepare(self._request)
            if self._preamble:
                await self.response.write(self._preamble)
        return self.response

    async def write(self, data: bytes) -> None:
        await (await self.start()).write(data)

    async def finish(self) -> web.StreamResponse:
        response = await self.start()
        await response.write_eof()
        return response


class SimServer:
    """Base of both simulators: a real aiohttp server plus a fault queue and a request log.

    Subclasses implement make_app() and _chat(request, exchange).
    """

    def __init__(self, script: Script, *, tokens_per_s: float | None, host: str,
                 port: int) -> None:
        self.script = script
        # Task text -> "simple" | "complex" for judge requests; tests replace it (a function of
        # the text, so concurrent requests get their own verdicts). By default: many words = complex.
        self.judge: Any = lambda task: "complex" if len(task.split()) > 20 else "simple"
        self.tokens_per_s = tokens_per_s
        self.default_fault: Fault | None = None
        self.requests: list[RecordedRequest] = []
        self._host = host
        self._port = port
        self._faults: deque[Fault | None] = deque()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._live: dict[int, web.Request] = {}  # id -> request (Request is unhashable)
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    def script_for(self, body: dict) -> Script:
        """The script for this request: the judge's verdict as JSON for a judge request."""
        fmt = body.get("response_format")
        schema = fmt.get("json_schema") if isinstance(fmt, dict) else None
        if not (isinstance(schema, dict) and schema.get("name") == JUDGE_SCHEMA):
            return self.script
        messages = body.get("messages") or []
        task = message_text(messages[-1]) if messages else ""
        verdict = self.judge(task)
        content = verdict if verdict not in ("simple", "complex") else orjson.dumps(
            {"complex": verdict == "complex"}).decode()
        return Script(content=content)

    # -- lifecycle -------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        raise NotImplementedError

    async def start(self) -> str:
        """Serve on host:port (0 = a free port); return the base URL including /v1."""
        # handler_cancellation: a client disconnect must cancel the handler at once, as
        # llama-server stops generating and frees the slot when its client goes away.
        runner = web.AppRunner(self.make_app(), handler_cancellation=True, access_log=None,
                               shutdown_timeout=1.0)
        await runner.setup()
        # A deep accept backlog: with aiohttp's 128, a burst of 256 connects drops SYNs and
        # the retransmit adds a full second, which benchmarks would blame on the upstream.
        site = web.TCPSite(runner, self._host, self._port, backlog=1024)
        await site.start()
        self._runner = runner
        port = runner.addresses[0][1]
        self._url = f"http://{self._host}:{port}/v1"
        return self._url

    async def stop(self) -> None:
        # Abort live streams first: the graceful shutdown would otherwise wait for stalled ones.
        for request in list(self._live.values()):
            if request.transport is not None:
                request.transport.abort()
        await asyncio.sleep(0)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("simulator not started")
        return self._url

    # -- faults and the request log --------------------------------------------------------
    def queued_faults(self) -> int:
        return len(self._faults)

    def live_requests(self) -> int:
        """Chat requests in flight now (they are recorded in ``requests`` only when they end)."""
        return len(self._live)

    def push_faults(self, *faults: Fault | None) -> None:
        """Queue one fault (or None = behave) per upcoming chat request; then default_fault."""
        self._faults.extend(faults)

    def _take_fault(self) -> Fault | None:
        return self._faults.popleft() if self._faults else self.default_fault

    async def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        if len(self.requests) < n:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append((n, future))
            try:
                await asyncio.wait_for(future, timeout)
            finally:
                self._waiters = [w for w in self._waiters if w[1] is not future]
        return list(self.requests)

    def _record(self, request: web.Request, ex: Exchange) -> None:
        self.requests.append(RecordedRequest(
            path=request.path, method=request.method, headers=dict(request.headers),
            body=ex.body, fault=ex.fault.name if ex.fault else None,
            outcome=ex.outcome or "completed", started=ex.started,
            ended=ex.ended or time.monotonic(), tokens_sent=ex.tokens_sent, peer=_peer(request)))
        for n, future in self._waiters:
            if len(self.requests) >= n and not future.done():
                future.set_result(None)

    # -- the chat route ----------------------------------------------------------------------
    async def _chat_entry(self, request: web.Request) -> web.StreamResponse:
        ex = Exchange(fault=self._take_fault(), started=time.monotonic())
        self._live[id(request)] = request
        try:
            return await self._chat(request, ex)
        except asyncio.CancelledError:
            ex.ended = ex.ended or time.monotonic()
            ex.outcome = ex.outcome or "cancelled"
            raise
        except ConnectionResetError:
            # A write hit a connection the client already closed; connection_lost follows and
            # cancels us. Waiting for that keeps aiohttp from logging a spurious 500.
            ex.ended = ex.ended or time.monotonic()
            ex.outcome = ex.outcome or "cancelled"
            await _await_cancellation()
            raise
        except BaseException:
            ex.outcome = ex.outcome or "error"
            raise
        finally:
            self._live.pop(id(request), None)
            self._record(request, ex)

    async def _chat(self, request: web.Request, ex: Exchange) -> web.StreamResponse:
        raise NotImplementedError

    async def _abort(self, request: web.Request, ex: Exchange) -> None:
        """Drop the TCP connection without a word (RST); never returns normally."""
        ex.outcome = "fault"
        ex.ended = time.monotonic()
        if request.transport is not None:
            request.transport.abort()
        await _await_cancellation()

    # -- the token loop ------------------------------------------------------------------------
    async def _generate(self, request: web.Request, ex: Exchange,
                        steps: list[tuple[int, bytes]], out: SseStream | None) -> Fault | None:
        """Write (cost, event) steps with pacing; out=None generates without writing.

        Returns the fault that ends the response early (an error event to send, or for a
        non-streamed response also a malformed body), else None.
        """
        pacer = Pacer(self.tokens_per_s)
        for cost, data in steps:
            if cost:
                if (stop := await self._inject(request, ex, out, pacer)) is not None:
                    return stop
                await pacer.tick()
                if ex.first_token_at is None:
                    ex.first_token_at = time.monotonic()
            if out is not None and data:
                await out.write(data)
            ex.tokens_sent += cost
        return await self._inject(request, ex, out, pacer)

    async def _inject(self, request: web.Request, ex: Exchange, out: SseStream | None,
                      pacer: Pacer) -> Fault | None:
        fault = ex.fault
        if (fault is None or ex.fault_fired or fault.name not in _IN_LOOP
                or ex.tokens_sent < fault.after_tokens):
            return None
        ex.fault_fired = True
        if fault.name == "stall_after":
            await pause(fault.seconds)
            pacer.restart()
            return None
        if fault.name == "cut_after":
            await self._abort(request, ex)
        if fault.name == "malformed_after" and out is not None:
            await out.write(MALFORMED_EVENT)
            return None
        return fault


async def _await_cancellation() -> None:
    await asyncio.sleep(_ABORT_GRACE_S)
    raise ConnectionResetError("connection dropped but the handler was not cancelled")


def error_response(status: int, body: dict, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), headers=headers,
                        content_type="application/json")


def _peer(request: web.Request) -> str:
    peername = request.transport.get_extra_info("peername") if request.transport is not None else None
    return f"{peername[0]}:{peername[1]}" if peername else ""
