"""The llama-server simulator's state and informational routes: its error vocabulary (§2.7),
slots, counters, prompt cache, and /health, /models, /props, /slots and /metrics."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import attrs
from aiohttp import web

from backends.sim.common import Exchange, error_response, message_text

BUILD_INFO = "b6400-aa6192d3"
_ERRORS = MappingProxyType({  # status -> (type, message) in llama-server's vocabulary (§2.7)
    400: ("invalid_request_error", "Invalid request"),
    401: ("authentication_error", "Invalid API Key"),
    403: ("permission_error", "Forbidden"),
    404: ("not_found_error", "File Not Found"),
    429: ("unavailable_error", "Too many requests"),
    500: ("server_error", "Internal server error"),
    501: ("not_supported_error", "Not supported"),
    503: ("unavailable_error", "Service unavailable"),
})


def error_body(status: int, message: str | None = None, type_: str | None = None,
               **extra: Any) -> dict:
    """llama-server's error envelope: {"error": {"code", "message", "type", ...}}."""
    default_type, default_message = _ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", "Error"))
    return {"error": {"code": status, "message": message or default_message,
                      "type": type_ or default_type, **extra}}


def llama_error(status: int, message: str | None = None, type_: str | None = None, *,
                headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    return error_response(status, error_body(status, message, type_, **extra), headers)


@attrs.define
class Slot:
    """One slot; the ``n_prompt_*`` fields describe its current or last task (/slots)."""

    id: int
    exchange: Exchange | None = None
    id_task: int = -1
    n_prompt_tokens: int = 0
    n_prompt_tokens_cache: int = 0
    n_prompt_tokens_processed: int = 0


@attrs.define
class Counters:
    prompt_tokens_total: int = 0
    prompt_seconds_total: float = 0.0
    tokens_predicted_total: int = 0
    tokens_predicted_seconds_total: float = 0.0
    n_decode_total: int = 0


class PromptCache:
    """llama-server's prompt reuse: the longest common message prefix with any of the last
    ``size`` distinct prompts counts as cached (one prompt per slot plus the host-memory cache,
    so an interleaved second conversation does not evict the first)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.prompts: list[list] = []  # most recently used first

    def cached(self, messages: list, prompt_tokens: int) -> int:
        """Tokens of the longest message prefix shared with a cached prompt."""
        shared = max((_shared_prefix(old, messages) for old in self.prompts), default=0)
        chars = sum(len(message_text(m)) for m in messages[:shared])
        # The last prompt token is always evaluated again, as in llama-server (cache_n = n - 1).
        return max(0, min(chars // 4, prompt_tokens - 1))

    def remember(self, messages: list) -> None:
        """Put a prompt first in the cache; the prompts it extends (or repeats) make way."""
        rest = [old for old in self.prompts if _shared_prefix(old, messages) < len(old)]
        self.prompts = [list(messages), *rest][:max(1, self.size)]

    def forget_unprocessed(self, messages: list, processed_tokens: int) -> None:
        """Prompt processing was cut short: keep only the messages it got through."""
        keep, chars = 0, 0
        for m in messages:
            chars += len(message_text(m))
            if chars // 4 > processed_tokens:
                break
            keep += 1
        self.prompts = [old for old in self.prompts if old != messages]
        if keep:
            self.remember(messages[:keep])


class InfoRoutes:
    """llama-server's informational routes: /health, /models, /props, /slots, /metrics. Mixed
    into :class:`backends.sim.llamacpp.LlamaCppSim`, whose state they read."""

    loading: bool
    model_alias: str
    n_ctx: int
    metrics: bool
    _created: int
    _slots: list[Slot]
    _counters: Counters
    _deferred: int

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _models(self, request: web.Request) -> web.Response:
        meta = None if self.loading else {
            "vocab_type": 2, "n_vocab": 151552, "n_ctx_train": 131072, "n_embd": 4096,
            "n_params": 9_400_000_000, "size": 5_700_000_000}
        return web.json_response({"object": "list", "data": [{
            "id": self.model_alias, "object": "model", "created": self._created,
            "owned_by": "llamacpp", "meta": meta}]})

    async def _props(self, request: web.Request) -> web.Response:
        return web.json_response({
            "default_generation_settings": {
                "id": 0, "id_task": -1, "n_ctx": self.n_ctx, "speculative": False,
                "is_processing": False, "params": self._params()},
            "total_slots": len(self._slots),
            "model_path": f"/models/{self.model_alias}.gguf",
            "chat_template": "{% for message in messages %}...{% endfor %}",
            "modalities": {"vision": False},
            "build_info": BUILD_INFO})

    async def _slots_route(self, request: web.Request) -> web.Response:
        if request.query.get("fail_on_no_slot") and all(s.exchange for s in self._slots):
            return llama_error(503, "no slot available", "unavailable_error")
        return web.json_response([self._slot_json(s) for s in self._slots])

    def _slot_json(self, s: Slot) -> dict:
        out: dict[str, Any] = {
            "id": s.id, "id_task": s.id_task, "n_ctx": self.n_ctx, "speculative": False,
            "is_processing": s.exchange is not None, "params": self._params(),
            "next_token": {"has_next_token": s.exchange is not None, "has_new_line": False,
                           "n_remain": -1,
                           "n_decoded": s.exchange.tokens_sent if s.exchange else 0}}
        if s.id_task >= 0:  # the current or last task's prompt (§8.x)
            out.update(n_prompt_tokens=s.n_prompt_tokens,
                       n_prompt_tokens_processed=s.n_prompt_tokens_processed,
                       n_prompt_tokens_cache=s.n_prompt_tokens_cache)
        return out

    async def _metrics_route(self, request: web.Request) -> web.Response:
        if not self.metrics:
            return llama_error(501, "This server does not support metrics endpoint.",
                               "not_supported_error")
        c = self._counters
        series = [
            ("prompt_tokens_total", "counter", c.prompt_tokens_total),
            ("prompt_seconds_total", "counter", c.prompt_seconds_total),
            ("tokens_predicted_total", "counter", c.tokens_predicted_total),
            ("tokens_predicted_seconds_total", "counter", c.tokens_predicted_seconds_total),
            ("n_decode_total", "counter", c.n_decode_total),
            ("prompt_tokens_seconds", "gauge", rate(c.prompt_tokens_total,
                                                     c.prompt_seconds_total)),
            ("predicted_tokens_seconds", "gauge", rate(c.tokens_predicted_total,
                                                        c.tokens_predicted_seconds_total)),
            ("requests_processing", "gauge", sum(1 for s in self._slots if s.exchange)),
            ("requests_deferred", "gauge", self._deferred),
        ]
        lines = []
        for name, kind, value in series:
            lines += [f"# HELP llamacpp:{name} {name.replace('_', ' ')}.",
                      f"# TYPE llamacpp:{name} {kind}", f"llamacpp:{name} {value}"]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    def _params(self) -> dict:
        return {"n_predict": -1, "temperature": 0.8, "top_k": 40, "top_p": 0.95,
                "min_p": 0.05, "stream": False, "reasoning_format": "deepseek"}


def _shared_prefix(old: list, new: list) -> int:
    """How many leading messages two prompts share."""
    shared = 0
    for a, b in zip(old, new, strict=False):
        if a != b:
            break
        shared += 1
    return shared


def rate(n: float, seconds: float) -> float:
    return n / seconds if seconds > 0 else 0.0
