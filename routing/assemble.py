"""Assemble a ``chat.completion`` from ``chat.completion.chunk`` events.

Non-streaming requests are streamed upstream and assembled here, so they get the same watchdog
and failover as streams.
"""

from __future__ import annotations

import contextlib
from typing import Any, AsyncIterator, Iterable

from backends import Chunk
from routing.events import Event, Outcome

COPIED = ("id", "created", "model", "system_fingerprint", "service_tier")


def assemble(chunks: Iterable[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"object": "chat.completion"}
    content: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    for data in chunks:
        for key in COPIED:
            if key in data and key not in out:
                out[key] = data[key]
        for key in ("usage", "timings", "time_info"):
            if data.get(key):
                out[key] = data[key]
        for choice in data.get("choices") or ():
            finish = choice.get("finish_reason") or finish
            delta = choice.get("delta") or {}
            if delta.get("content"):
                content.append(delta["content"])
            if delta.get("reasoning_content"):
                reasoning.append(delta["reasoning_content"])
            for call in delta.get("tool_calls") or ():
                slot = calls.setdefault(call.get("index", len(calls)),
                                        {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
                slot["id"] = call.get("id") or slot["id"]
                fn = call.get("function") or {}
                slot["function"]["name"] += fn.get("name") or ""
                slot["function"]["arguments"] += fn.get("arguments") or ""
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content) if content or not calls else None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    out["choices"] = [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}]
    return out


async def collect(events: AsyncIterator[Event], tally: Outcome) -> dict[str, Any]:
    """The non-streaming consumer of a request's events: chunks are assembled, every other event
    is folded into ``tally``. Raises the request's error if it failed."""
    chunks = []
    async with contextlib.aclosing(events):  # type: ignore[type-var]
        async for event in events:
            if type(event) is Chunk:
                chunks.append(event.data)  # type: ignore[union-attr]
                continue
            tally.fold(event)
    if tally.error is not None:
        raise tally.error
    data = assemble(chunks)
    data["model_used"] = tally.model_used
    return data
