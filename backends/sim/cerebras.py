"""A Cerebras Inference simulator (``zai-glm-4.7``): a real aiohttp server speaking its format.

Reproduces protocols.md §1 and §6.2:

* Strict validation: unknown top-level keys and unknown per-role message keys (e.g. assistant
  ``reasoning_content``) are a 400 ``wrong_api_format`` with a TOP-LEVEL body (no ``error``
  wrapper), one ``<path>: property '<path>' is unsupported`` line per offending key.
  ``tools`` + ``response_format`` together, ``max_completion_tokens`` above the cap and
  prompt + max_completion_tokens above the context window are rejected too.
* Six ``x-ratelimit-*`` headers on every response; a continuously refilling tokens-per-minute
  bucket reserves prompt + max_completion_tokens (default 8192) up front and gives back what the
  answer did not use when the request ends; a requests-per-day counter. 429 bodies are the
  ``token_quota_exceeded`` / ``request_quota_exceeded`` shapes.
* Streams: ``text/event-stream; charset=utf-8``; chunks OMIT finish_reason until the end; role
  chunk, ``delta.reasoning`` tokens, ``delta.content`` tokens, all tool calls complete in ONE
  chunk, an empty-delta chunk, then the finish chunk carrying ``usage`` and ``time_info``
  (regardless of ``include_usage``). ``[DONE]`` only with ``send_done=True`` (the recordings end
  without it).

Assumptions (unverified upstream, see §6.4 and §7):

* Images: GLM 4.7 is text-only here, so ``image_url``/``image`` parts get 400 wrong_api_format.
* A trailing assistant message is NOT a prefill: the sim answers the full script as a new turn.
* A continue-instruction works: if the last message is a user message whose text starts with
  "Continue" and the message before it is an assistant message whose content is a prefix of
  ``script.content``, only the rest of ``script.content`` is generated.
* Unknown (not retired) model ids are accepted and echoed back; ids in ``retired_models`` 404.
* Reasoning is not emitted with ``reasoning_effort: "none"``, ``disable_reasoning: true`` or
  ``reasoning_format: "hidden"``.
* A bucket 429 or validation 400 is recorded as outcome "rejected".
"""

from __future__ import annotations

import secrets
import time
import uuid
from types import MappingProxyType
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
    error_response,
    estimate_prompt_tokens,
    make_plan,
    message_text,
    pause,
    retry_after_text,
)

ALLOWED_KEYS = frozenset({
    "model", "messages", "stream", "stream_options", "max_completion_tokens", "max_tokens",
    "min_completion_tokens", "min_tokens", "temperature", "top_p", "stop", "seed", "n",
    "logprobs", "top_logprobs", "logit_bias", "frequency_penalty", "presence_penalty", "tools",
    "tool_choice", "parallel_tool_calls", "response_format", "prediction", "service_tier", "user",
    "reasoning_effort", "reasoning_format", "disable_reasoning", "clear_thinking"})
MESSAGE_KEYS = MappingProxyType({
    "system": frozenset({"role", "content", "name"}),
    "user": frozenset({"role", "content", "name"}),
    "assistant": frozenset({"role", "content", "name", "reasoning", "tool_calls"}),
    "tool": frozenset({"role", "content", "tool_call_id", "name"}),
})
DEFAULT_MAX_COMPLETION = 8192
_DAY_S = 86400.0
_RATE_SNAPSHOT = web.RequestKey("sim_ratelimit_headers", dict)
_ERRORS = MappingProxyType({  # status -> (message, type, param, code), all top-level (§1.6)
    400: ("Bad request", "invalid_request_error", None, None),
    401: ("Wrong API Key", "invalid_request_error", "api_key", "wrong_api_key"),
    404: ("Not found", "not_found_error", None, None),
    429: ("Requests per minute limit exceeded - too many requests sent.",
          "too_many_requests_error", "quota", "request_quota_exceeded"),
    500: ("Internal server error", "server_error", None, None),
    503: ("Service temporarily unavailable", "service_unavailable_error", None, None),
})
_TOKENS_429 = ("Tokens per minute limit exceeded - too many tokens processed.",
               "too_many_tokens_error", "quota", "token_quota_exceeded")


def cerebras_error(status: int, fields: tuple | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    message, type_, param, code = fields or _ERRORS.get(
        status, ("Error", "server_error" if status >= 500 else "invalid_request_error",
                 None, None))
    return error_response(status, {"message": message, "type": type_, "param": param,
                                   "code": code}, headers)


def _wrong_format(message: str, param: str = "validation_error") -> web.Response:
    return cerebras_error(400, (message, "invalid_request_error", param, "wrong_api_format"))


@attrs.define
class TokenBucket:
    """Tokens-per-minute bucket that refills continuously, as the 2026 rate-limit page says."""

    capacity: float
    level: float
    stamp: float

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.capacity / 60.0)
        self.stamp = now

    def take(self, n: float, now: float) -> bool:
        self.refill(now)
        if n > self.level:
            return False
        self.level -= n
        return True

    def give_back(self, n: float, now: float) -> None:
        self.refill(now)
        self.level = min(self.capacity, self.level + max(0.0, n))

    def seconds_to_full(self, now: float) -> float:
        self.refill(now)
        return (self.capacity - self.level) * 60.0 / self.capacity if self.capacity else 0.0


@attrs.frozen
class _Turn:
    cid: str
    created: int
    model: str
    plan: Plan
    prompt_tokens: int
    started: float


class CerebrasSim(SimServer):
    """Simulated Cerebras Inference API.

    >>> sim = CerebrasSim(Script(reasoning="Think.", content="Hi"), tokens_per_s=None,
    ...                   api_key="k", rate_limit_tokens_per_minute=60_000)
    >>> base = await sim.start()          # "http://127.0.0.1:PORT/v1"
    >>> ...; await sim.stop()
    """

    def __init__(self, script: Script = Script(), *, tokens_per_s: float | None = 200.0,
                 host: str = "127.0.0.1", port: int = 0, model: str = "zai-glm-4.7",
                 context_window: int = 131072, max_completion_cap: int = 40960,
                 api_key: str | None = None, send_done: bool = False,
                 rate_limit_tokens_per_minute: int = 1_000_000,
                 rate_limit_requests_per_day: int = 1_000_000,
                 retired_models: tuple[str, ...] = (), reject_prefill: bool = False) -> None:
        super().__init__(script, tokens_per_s=tokens_per_s, host=host, port=port)
        self.model = model
        self.context_window = context_window
        self.max_completion_cap = max_completion_cap
        self.api_key = api_key
        self.send_done = send_done
        self.rate_limit_requests_per_day = rate_limit_requests_per_day
        self.retired_models = tuple(retired_models)
        # Whether Cerebras accepts a trailing assistant message is unverified (protocols §6.4);
        # this models the strict answer, so a gateway's fallback to instructions can be tested.
        self.reject_prefill = reject_prefill
        now = time.monotonic()
        self.bucket = TokenBucket(rate_limit_tokens_per_minute, rate_limit_tokens_per_minute, now)
        self._day_start = now
        self._requests_today = 0
        self._fingerprint = "fp_" + secrets.token_hex(10)
        self._created = int(time.time())

    def make_app(self) -> web.Application:
        @web.middleware
        async def gate(request: web.Request, handler: Any) -> web.StreamResponse:
            # Chat requests check auth themselves so that they are logged; tcp_warming is the
            # SDK's fire-and-forget probe and never needs a key.
            exempt = request.path.endswith(("/chat/completions", "/tcp_warming"))
            if not exempt and (denied := self._auth(request)) is not None:
                return denied
            try:
                return await handler(request)
            except web.HTTPNotFound:
                return cerebras_error(404, ("Not found", "not_found_error", None, None))

        app = web.Application(middlewares=[gate])
        app.on_response_prepare.append(self._rate_headers)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model_id}", self._model)
        app.router.add_get("/v1/tcp_warming", self._tcp_warming)
        app.router.add_post("/v1/chat/completions", self._chat_entry)
        return app

    # -- rate limits and auth -----------------------------------------------------------------
    async def _rate_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        # A chat request carries the snapshot taken when it was admitted, so streamed and
        # non-streamed answers both show the budget right after their reservation.
        response.headers.update(request.get(_RATE_SNAPSHOT) or self._rate_snapshot())

    def _rate_snapshot(self) -> dict[str, str]:
        now = time.monotonic()
        day_elapsed = (now - self._day_start) % _DAY_S
        return {
            "x-ratelimit-limit-requests-day": str(self.rate_limit_requests_per_day),
            "x-ratelimit-limit-tokens-minute": str(int(self.bucket.capacity)),
            "x-ratelimit-remaining-requests-day": str(
                max(0, self.rate_limit_requests_per_day - self._requests_today)),
            "x-ratelimit-remaining-tokens-minute": str(int(self._bucket_level(now))),
            "x-ratelimit-reset-requests-day": repr(_DAY_S - day_elapsed),
            "x-ratelimit-reset-tokens-minute": repr(self.bucket.seconds_to_full(now)),
        }

    def _bucket_level(self, now: float) -> float:
        self.bucket.refill(now)
        return self.bucket.level

    def _roll_day(self, now: float) -> None:
        if now - self._day_start >= _DAY_S:
            self._day_start, self._requests_today = now, 0

    def _auth(self, request: web.Request) -> web.Response | None:
        if self.api_key is None or request.headers.get(
                "Authorization") == f"Bearer {self.api_key}":
            return None
        return cerebras_error(401)

    # -- informational routes -----------------------------------------------------------------
    def _model_card(self, model_id: str) -> dict:
        return {"id": model_id, "object": "model", "created": self._created,
                "owned_by": "Cerebras"}

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [self._model_card(self.model)]})

    async def _model(self, request: web.Request) -> web.Response:
        model_id = request.match_info["model_id"]
        if model_id != self.model:
            return self._not_found(model_id)
        return web.json_response(self._model_card(model_id))

    async def _tcp_warming(self, request: web.Request) -> web.Response:
        return web.json_response({})

    def _not_found(self, model_id: str) -> web.Response:
        return cerebras_error(404, (
            f"Model {model_id} does not exist or you do not have access to it.",
            "not_found_error", "model", "model_not_found"))

    # -- chat completions ----------------------------------------------------------------------
    async def _chat(self, request: web.Request, ex: Exchange) -> web.StreamResponse:
        if ex.fault_is("reset_before_headers"):
            await request.read()
            await self._abort(request, ex)
        if ex.fault_is("http_error"):
            ex.outcome = "fault"
            retry = ex.fault.retry_after
            return cerebras_error(ex.fault.status, headers=None if retry is None else {
                "retry-after": retry_after_text(retry)})
        if (denied := self._auth(request)) is not None:
            ex.outcome = "rejected"
            return denied
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            ex.outcome = "rejected"
            return _wrong_format(f": Invalid JSON: {exc}")
        ex.body = body
        rejection = self._validate(body)
        if rejection is None:
            rejection = self._screen(body, ex)
        if rejection is not None:
            ex.outcome = ex.outcome or "rejected"
            return rejection
        prompt_tokens = estimate_prompt_tokens(body["messages"])
        max_completion = _max_completion(body)
        reserved = prompt_tokens + max_completion
        request[_RATE_SNAPSHOT] = self._rate_snapshot()
        try:
            turn = _Turn(cid=f"chatcmpl-{uuid.uuid4()}", created=int(time.time()),
                         model=body["model"], prompt_tokens=prompt_tokens,
                         plan=self._plan(body, max_completion), started=time.monotonic())
            if body.get("stream"):
                return await self._stream(request, ex, turn)
            return await self._complete(request, ex, turn)
        finally:
            # The reservation was an upper bound; only what was really used stays spent.
            self.bucket.give_back(reserved - prompt_tokens - ex.tokens_sent, time.monotonic())

    def _screen(self, body: dict, ex: Exchange) -> web.Response | None:
        """Checks of a well-formed request: model, context length, then the rate limits."""
        if body["model"] in self.retired_models:
            return self._not_found(body["model"])
        length = estimate_prompt_tokens(body["messages"]) + _max_completion(body)
        if ex.fault_is("context_overflow") or length > self.context_window:
            if ex.fault_is("context_overflow"):
                ex.outcome = "fault"
            message = ("Please reduce the length of the messages or completion. Current length "
                       f"is {max(length, self.context_window + 1)} while limit is "
                       f"{self.context_window}")
            return cerebras_error(400, (message, "invalid_request_error", "messages",
                                        "context_length_exceeded"))
        return self._admit(length)

    def _validate(self, body: Any) -> web.Response | None:
        if not isinstance(body, dict):
            return _wrong_format("body: Input should be a valid dictionary")
        problems = [f"body.{k}: property 'body.{k}' is unsupported"
                    for k in body if k not in ALLOWED_KEYS]
        messages = body.get("messages")
        if isinstance(messages, list):
            for i, m in enumerate(messages):
                role = m.get("role") if isinstance(m, dict) else None
                if not isinstance(role, str) or role not in MESSAGE_KEYS:
                    problems.append(f"messages.{i}.role: Input should be 'system', 'user', "
                                    "'assistant' or 'tool'")
                    continue
                problems += [f"messages.{i}.{role}.{k}: property 'messages.{i}.{role}.{k}' "
                             "is unsupported" for k in m if k not in MESSAGE_KEYS[role]]
        if problems:
            return _wrong_format("\n".join(problems))
        for key in ("model", "messages"):
            if key not in body:
                return _wrong_format(f"body.{key}: Field required")
        if not isinstance(body["model"], str):
            return _wrong_format("body.model: Input should be a valid string")
        if not isinstance(messages, list) or not messages:
            return _wrong_format("body.messages: Input should be a non-empty list")
        for i, m in enumerate(messages):
            parts = m.get("content") if isinstance(m.get("content"), list) else []
            for j, part in enumerate(parts):
                if isinstance(part, dict) and part.get("type") in ("image_url", "image"):
                    return _wrong_format(f"messages.{i}.{m['role']}.content.{j}: image input is "
                                         f"not supported by model {body['model']}")
        if self.reject_prefill and messages[-1].get("role") == "assistant":
            return _wrong_format(f"messages.{len(messages) - 1}: a trailing assistant message is not supported",
                                 param="messages")
        if body.get("tools") and body.get("response_format"):
            return _wrong_format("tools and response_format cannot be used together",
                                 param="response_format")
        max_completion = _max_completion(body)
        if max_completion > self.max_completion_cap:
            return _wrong_format(f"body.max_completion_tokens: Input should be less than or "
                                 f"equal to {self.max_completion_cap}")
        return None

    def _admit(self, reserve: int) -> web.Response | None:
        now = time.monotonic()
        self._roll_day(now)
        if self._requests_today >= self.rate_limit_requests_per_day:
            return cerebras_error(429)
        if not self.bucket.take(reserve, now):
            return cerebras_error(429, _TOKENS_429)
        self._requests_today += 1
        return None

    def _plan(self, body: dict, max_completion: int) -> Plan:
        script = self.script_for(body)
        messages = body["messages"]
        content = script.content
        if (len(messages) >= 2 and messages[-1].get("role") == "user"
                and message_text(messages[-1]).lstrip().startswith("Continue")
                and messages[-2].get("role") == "assistant"
                and content.startswith(message_text(messages[-2]))):
            content = content[len(message_text(messages[-2])):]
        reasoning = not (body.get("reasoning_effort") == "none"
                         or body.get("disable_reasoning") is True
                         or body.get("reasoning_format") == "hidden")
        return make_plan(script, content=content, reasoning=reasoning, max_tokens=max_completion)

    def _chunk(self, turn: _Turn, delta: dict, finish: str | None = None,
               **extra: Any) -> bytes:
        choice: dict[str, Any] = {"delta": delta}
        if finish is not None:  # Cerebras omits the key instead of sending null
            choice["finish_reason"] = finish
        choice["index"] = 0
        return b"data: " + orjson.dumps({
            "id": turn.cid, "choices": [choice], "created": turn.created, "model": turn.model,
            "system_fingerprint": self._fingerprint, "object": "chat.completion.chunk",
            **extra}) + b"\n\n"

    def _tool_calls(self, plan: Plan) -> list[dict]:
        return [{"function": {"name": c["name"], "arguments": c.get("arguments", "")},
                 "type": "function", "id": secrets.token_hex(5)[:9], "index": i}
                for i, c in enumerate(plan.tool_calls)]

    def _steps(self, turn: _Turn) -> list[tuple[int, bytes]]:
        plan = turn.plan
        steps = [(1, self._chunk(turn, {"reasoning": t})) for t in plan.reasoning]
        steps += [(1, self._chunk(turn, {"content": t})) for t in plan.content]
        if plan.tool_calls:
            cost = sum(len(arg_fragments(c.get("arguments", ""))) for c in plan.tool_calls)
            steps.append((cost, self._chunk(turn, {"tool_calls": self._tool_calls(plan)})))
        return steps

    def _usage(self, ex: Exchange, turn: _Turn) -> dict:
        now = time.monotonic()
        first = ex.first_token_at or now
        return {
            "usage": {"prompt_tokens": turn.prompt_tokens, "completion_tokens": ex.tokens_sent,
                      "total_tokens": turn.prompt_tokens + ex.tokens_sent,
                      "prompt_tokens_details": {"cached_tokens": 0}},
            "time_info": {"queue_time": turn.started - ex.started,
                          "prompt_time": first - turn.started,
                          "completion_time": now - first, "total_time": now - ex.started,
                          "created": time.time()}}

    async def _stream(self, request: web.Request, ex: Exchange, turn: _Turn) -> web.StreamResponse:
        out = SseStream(request, {"Content-Type": "text/event-stream; charset=utf-8"},
                        self._chunk(turn, {"role": "assistant"}))
        await out.start()  # Cerebras answers at once; the role chunk comes before any token
        if ex.fault_is("slow_first_token"):
            await pause(ex.fault.seconds)
        stop = await self._generate(request, ex, self._steps(turn), out)
        if stop is not None:
            ex.outcome = "fault"
            message, type_, _, code = _ERRORS.get(stop.status, _ERRORS[500])
            await out.write(b"data: " + orjson.dumps({
                "error": {"id": "", "code": code or type_, "message": message, "param": None,
                          "type": type_}, "status_code": stop.status}) + b"\n\n")
        else:
            await out.write(self._chunk(turn, {}))
            await out.write(self._chunk(turn, {}, turn.plan.finish_reason,
                                        **self._usage(ex, turn)))
            if self.send_done and not ex.fault_is("no_done"):
                await out.write(b"data: [DONE]\n\n")
            elif ex.fault_is("no_done"):
                await pause(ex.fault.seconds)
        return await out.finish()

    async def _complete(self, request: web.Request, ex: Exchange, turn: _Turn) -> web.Response:
        if ex.fault_is("slow_first_token"):
            await pause(ex.fault.seconds)
        stop = await self._generate(request, ex, [(1, b"")] * turn.plan.completion_tokens, None)
        if stop is not None:
            ex.outcome = "fault"
            if stop.name == "malformed_after":
                return web.Response(body=b'{"choices": [', content_type="application/json")
            return cerebras_error(stop.status)
        plan = turn.plan
        message: dict[str, Any] = {"role": "assistant", "content": "".join(plan.content)}
        if plan.reasoning:
            message["reasoning"] = "".join(plan.reasoning)
        if plan.tool_calls:
            message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"}
                                     for c in self._tool_calls(plan)]
            message["content"] = message["content"] or None
        return web.json_response({
            "id": turn.cid, "choices": [{"finish_reason": plan.finish_reason, "index": 0,
                                         "message": message}],
            "created": turn.created, "model": turn.model,
            "system_fingerprint": self._fingerprint, "object": "chat.completion",
            **self._usage(ex, turn)}, dumps=lambda o: orjson.dumps(o).decode())


def _max_completion(body: dict) -> int:
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    return value if isinstance(value, int) and value > 0 else DEFAULT_MAX_COMPLETION
