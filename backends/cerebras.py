"""Cerebras Inference.

Cerebras validates strictly: any property it does not know is a 400 ``wrong_api_format``
(``shared/protocols.md`` §1.2, §6.3), so requests are rebuilt from a whitelist. It streams
reasoning as ``delta.reasoning`` where Cline reads ``reasoning_content``, puts usage on the
finish chunk, often sends no ``[DONE]``, and reports rate limits in ``x-ratelimit-*`` headers
whose reset values are float seconds.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

from backends.events import RateLimit
from backends.openai_compatible import OpenAICompatible

# Request properties Cerebras accepts (cerebras-cloud-sdk 1.67 completion_create_params).
CEREBRAS_KEYS = frozenset({
    "model", "messages", "stream", "stream_options", "max_completion_tokens",
    "min_completion_tokens", "temperature", "top_p", "stop", "seed", "n", "logprobs",
    "top_logprobs", "logit_bias", "frequency_penalty", "presence_penalty", "tools", "tool_choice",
    "parallel_tool_calls", "response_format", "prediction", "service_tier", "user",
    "reasoning_effort", "reasoning_format", "clear_thinking",
})
MESSAGE_KEYS = {
    "system": frozenset({"role", "content", "name"}),
    "user": frozenset({"role", "content", "name"}),
    "assistant": frozenset({"role", "content", "name", "reasoning", "tool_calls"}),
    "tool": frozenset({"role", "content", "tool_call_id", "name"}),
}
class Cerebras(OpenAICompatible):
    """Cerebras Inference (``https://api.cerebras.ai/v1``)."""

    kind: ClassVar[str] = "cerebras"

    def upstream_body(self, body: Mapping[str, Any], stream: bool) -> dict[str, Any]:
        out = {k: v for k, v in super().upstream_body(body, stream).items() if k in CEREBRAS_KEYS}
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if isinstance(max_tokens, int):
            cap = self.cfg.max_output_tokens or max_tokens
            out["max_completion_tokens"] = min(max_tokens, cap)
        elif self.cfg.max_output_tokens:
            # Cerebras reserves rate-limit budget for prompt + max_completion_tokens up front;
            # an explicit, realistic cap keeps that reservation honest.
            out["max_completion_tokens"] = self.cfg.max_output_tokens
        if body.get("disable_reasoning") is True and "reasoning_effort" not in out:
            out["reasoning_effort"] = "none"  # disable_reasoning is retired since 2026-07-21
        out["messages"] = [_cerebras_message(m) for m in out.get("messages") or ()]
        return out

    def read_limits(self, headers: Mapping[str, str]) -> dict[str, RateLimit]:
        now = self.clock()
        return {window: RateLimit(_float(headers.get(f"x-ratelimit-limit-{window}")),
                                  _float(headers.get(f"x-ratelimit-remaining-{window}")),
                                  _float(headers.get(f"x-ratelimit-reset-{window}")), now)
                for window in _windows(headers)}

    def retry_after_hint(self, headers: Mapping[str, str]) -> float | None:
        """Cline only reads ``retry-after``; derive it from the rate-limit reset headers: the reset
        of a window that shows ``remaining: 0``. A 429 with no exhausted window hit a limit the
        headers do not report (Cerebras's request quota, say); the soonest reset of the others
        (often 0.05 s) says nothing about it, so there is no hint, and routing's ``cooldown_s``
        applies (issue #14: the pool tests caught the cloud being asked again at once)."""
        exhausted = [r for w in _windows(headers)
                     if (r := _float(headers.get(f"x-ratelimit-reset-{w}"))) is not None
                     and _float(headers.get(f"x-ratelimit-remaining-{w}")) == 0]
        return min(exhausted) if exhausted else None


def _windows(headers: Mapping[str, str]) -> list[str]:
    prefix = "x-ratelimit-remaining-"
    return [k[len(prefix):].lower() for k in headers if k.lower().startswith(prefix)]


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _cerebras_message(message: Mapping[str, Any]) -> Mapping[str, Any]:
    role = message.get("role")
    allowed = MESSAGE_KEYS.get(role)
    if "reasoning_content" not in message and (allowed is None or allowed.issuperset(message)):
        return message  # nothing to change (the common case): shared, as upstream_body never mutates
    out = dict(message)
    if role == "assistant" and "reasoning_content" in out:
        # Cerebras rejects reasoning_content on history and calls the field `reasoning`.
        reasoning = out.pop("reasoning_content")
        if reasoning:
            out["reasoning"] = reasoning
    if allowed is not None:
        out = {k: v for k, v in out.items() if k in allowed}
    return out
