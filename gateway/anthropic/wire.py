"""Answers in the Messages API's shape: the stream's events, the whole message, and its usage.

A stream is, in this order and nothing else (the SDKs' accumulators reject any other)::

    message_start
    content_block_start(i) content_block_delta(i)* content_block_stop(i)     for i = 0, 1, ...
    message_delta (stop_reason, usage)
    message_stop

``ping`` may come between any two; a failure after the start ends with one ``error`` event and
no ``message_stop``, so a cut answer can never pass for a complete one.

The OpenAI chunks the supervisor yields map onto blocks as they come: ``reasoning_content``
opens a ``thinking`` block, ``content`` a ``text`` block, each tool call a ``tool_use`` block
(its arguments as ``input_json_delta``). A change of kind closes the open block first.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import orjson

from backends import Chunk
from gateway.errors import anthropic_error
from gateway.sse import RelayResponse
from routing.events import Outcome

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                "content_filter": "refusal"}
# Claude Code sends earlier thinking blocks back, and Anthropic's API refuses one without a
# signature; ours marks the thought as the gateway's (it is not verified on the way back in).
SIGNATURE = "glm-token-saver"
PING = b'event: ping\ndata: {"type":"ping"}\n\n'


def event(name: str, data: Mapping[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def usage_of(usage: Mapping[str, Any] | None, tally: Outcome | None = None) -> dict[str, int]:
    """OpenAI usage as Anthropic's, all four fields integers (Claude Code sums three of them for
    its context meter, and a missing one crashes it).

    After a failover the final usage sums every backend, but what Claude Code reads as its
    context is one prompt: the input side comes from the first backend that served, the output
    side is everything the client received."""
    usage = usage or {}
    first = tally.usage.get(tally.served_by[0]) if tally is not None and len(tally.served_by) > 1 else None
    source = first or usage
    prompt = int(source.get("prompt_tokens") or 0)
    cached = int((source.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    return {"input_tokens": max(0, prompt - cached), "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cached, "output_tokens": int(usage.get("completion_tokens") or 0)}


class AnthropicResponse(RelayResponse):
    """The keep-alive as the Messages API's own ``ping`` event instead of a comment."""

    ping = PING


class AnthropicWire:
    """One stream's encoder for :class:`gateway.sse.StreamRelay` (its ``Wire``)."""

    __slots__ = ("message_id", "model", "input_estimate", "index", "open", "tools", "stop", "echo")
    response_class = AnthropicResponse

    def __init__(self, message_id: str, model: str, input_estimate: Callable[[], int], prefill: str = "") -> None:
        """``input_estimate``: the gateway's count of the prompt, asked for when the stream opens
        (routing may still be counting it while the upstream works: routing.tokens.PromptCount)."""
        self.message_id, self.model, self.input_estimate = message_id, model, input_estimate
        # The client's prefill, which the answer may repeat first (llama.cpp echoes it; a model
        # that ignores it starts its answer with it): the client gets the continuation only.
        self.echo = prefill
        self.index = -1
        self.open: str | None = None  # the open block's kind: text, thinking or tool_use
        self.tools: dict[int, int] = {}  # OpenAI tool-call index -> block index
        self.stop: str | None = None

    def opening(self) -> bytes:
        # The real input count comes with the final message_delta; Claude Code reads this one
        # for its context meter meanwhile, so it is the gateway's own count, never 0.
        return event("message_start", {"type": "message_start", "message": {
            "id": self.message_id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": self.input_estimate(), "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "output_tokens": 0}}})

    def waiting(self) -> bytes:
        return PING

    def chunk(self, chunk: Chunk, finish: str | None, usage: dict[str, Any] | None,
              tally: Outcome) -> bytes | None:
        choices = chunk.data.get("choices")
        delta = choices[0].get("delta") if choices else None
        if finish:
            self.stop = STOP_REASONS.get(finish, "end_turn")
        if not delta:
            return None
        out = b""
        reasoning = delta.get("reasoning_content")
        if reasoning:
            out += self._into("thinking") + self._delta({"type": "thinking_delta", "thinking": reasoning})
        content = delta.get("content")
        if content and self.echo:
            content, self.echo = unecho(content, self.echo)
        if content:
            out += self._into("text") + self._delta({"type": "text_delta", "text": content})
        for call in delta.get("tool_calls") or ():
            out += self._tool(call)
        return out or None

    def closing(self, usage: dict[str, Any] | None, tally: Outcome) -> bytes:
        return self._close() + event("message_delta", {
            "type": "message_delta", "delta": {"stop_reason": self.stop or "end_turn", "stop_sequence": None},
            "usage": usage_of(usage, tally)}) + event("message_stop", {"type": "message_stop"})

    def failure(self, body: dict[str, Any], status: int) -> bytes:
        error, _ = anthropic_error(body["error"], status)
        return event("error", error)

    # --- blocks -----------------------------------------------------------------------------------
    def _into(self, kind: str) -> bytes:
        if self.open == kind:
            return b""
        out = self._close()
        self.index += 1
        self.open = kind
        block = {"type": "text", "text": ""} if kind == "text" else {"type": "thinking", "thinking": "",
                                                                     "signature": ""}
        return out + event("content_block_start", {"type": "content_block_start", "index": self.index,
                                                   "content_block": block})

    def _tool(self, call: Mapping[str, Any]) -> bytes:
        out = b""
        position = call.get("index", 0)
        function = call.get("function") or {}
        if position not in self.tools or (call.get("id") and self.open != "tool_use"):
            out += self._close()
            self.index += 1
            self.open = "tool_use"
            self.tools[position] = self.index
            block = {"type": "tool_use", "id": call.get("id") or f"toolu_{self.message_id}_{self.index}",
                     "name": function.get("name") or "", "input": {}}
            out += event("content_block_start", {"type": "content_block_start", "index": self.index,
                                                 "content_block": block})
        arguments = function.get("arguments")
        if arguments:
            out += event("content_block_delta", {"type": "content_block_delta", "index": self.tools[position],
                                                 "delta": {"type": "input_json_delta", "partial_json": arguments}})
        return out

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return event("content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta})

    def _close(self) -> bytes:
        if self.open is None:
            return b""
        out = b""
        if self.open == "thinking":
            out = self._delta({"type": "signature_delta", "signature": SIGNATURE})
        self.open = None
        return out + event("content_block_stop", {"type": "content_block_stop", "index": self.index})


def unecho(content: str, echo: str) -> tuple[str, str]:
    """``content`` without the part of ``echo`` it repeats; and what of ``echo`` is still due."""
    if echo.startswith(content):
        return "", echo[len(content):]
    if content.startswith(echo):
        return content[len(echo):], ""
    return content, ""  # it simply continues


def message_of(data: Mapping[str, Any], message_id: str, model: str, tally: Outcome,
               prefill: str = "") -> dict[str, Any]:
    """A whole chat.completion (the assembler's) as a Messages API message."""
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("reasoning_content"):
        content.append({"type": "thinking", "thinking": message["reasoning_content"], "signature": SIGNATURE})
    text = message.get("content") or ""
    if prefill and text.startswith(prefill):  # whole, llama.cpp returns the prefill and what follows
        text = text[len(prefill):]
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id") or f"toolu_{message_id}_{len(content)}",
                        "name": function.get("name") or "", "input": tool_input(function.get("arguments"))})
    return {"id": message_id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
            "stop_sequence": None, "usage": usage_of(data.get("usage"), tally)}


def tool_input(arguments: Any) -> dict[str, Any]:
    """A call's arguments as the object ``tool_use.input`` must be. Arguments that are not a
    JSON object are kept whole under ``arguments``, so the agent's own validation tells the
    model what went wrong, instead of the call silently losing them."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"arguments": arguments}
