"""One coherent client stream out of one or more upstream streams. Pure: no I/O, no clock.

:class:`Splice` remembers what the client has received, so that when a backend fails the next
one can take over without the client noticing more than a pause:

- **Nothing yet** (or only a role chunk): the fallback restarts the request; its role chunk is
  dropped if one was already sent.
- **Only reasoning**: the fallback restarts too. Its reasoning is relayed after the first
  backend's, on a new paragraph: thinking cannot be continued by prefill (llama.cpp refuses
  prefill while thinking is on), and reasoning is not part of the answer, so a second line of
  thought is harmless where a restarted *answer* would be duplicated text.
- **Content**: the fallback continues the partial answer (each backend builds that request:
  :meth:`backends.base.Backend.continuation_request`). Text it
  echoes or repeats from the start is stripped, new reasoning is dropped, and only new tokens
  are relayed.
- **Tool calls** are held back until complete (the next call starts, or any chunk without a
  tool call arrives, at the latest the finish chunk). A failure mid-call has then sent nothing
  of it, so the turn continues or restarts on the fallback, and arguments are never spliced
  across backends. The cost is that a long
  tool call (a whole file) reaches the client at once instead of piecemeal; Cline acts only on
  complete calls anyway, and Cerebras sends each call in one chunk.

After a switch every chunk carries the first stream's ``id``, ``created``, ``model`` and
``system_fingerprint``, and the final usage is the sum over all backends.
"""

from __future__ import annotations

from typing import Any, Mapping

from backends import Chunk
from routing.events import BEFORE_FIRST_TOKEN, MID_CONTENT, MID_REASONING, MID_TOOL_CALL

IDENTITY = ("id", "created", "model", "system_fingerprint")


def is_delta(data: Mapping[str, Any]) -> bool:
    """Does this chunk carry content, reasoning or a tool call (what the watchdog waits for)?"""
    choices = data.get("choices")
    if not choices:
        return False
    delta = choices[0].get("delta")
    return bool(delta) and bool(delta.get("content") or delta.get("reasoning_content") or delta.get("tool_calls"))


def add_usage(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not a or not b:
        return dict(a or b) if (a or b) else None
    out = dict(b)
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        out[key] = (a.get(key) or 0) + (b.get(key) or 0)
    cached = ((a.get("prompt_tokens_details") or {}).get("cached_tokens") or 0) + \
        ((b.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    out["prompt_tokens_details"] = {**(b.get("prompt_tokens_details") or {}), "cached_tokens": cached}
    return out


class Splice:
    __slots__ = ("identity", "role_sent", "content", "reasoning", "held", "held_index", "switched", "echo",
                 "drop_reasoning", "reasoning_gap", "prior_usage", "usage", "delivered")  # one per open stream

    def __init__(self) -> None:
        self.identity: dict[str, Any] | None = None
        self.role_sent = False
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.held: list[Chunk] = []
        self.held_index = -1
        self.switched = False
        self.echo = ""  # text the current backend may repeat before saying anything new
        self.drop_reasoning = False
        self.reasoning_gap = False  # start the next backend's reasoning on a new paragraph
        self.prior_usage: dict[str, Any] | None = None  # consumed by backends that failed
        self.usage: dict[str, Any] | None = None  # the current backend's own usage, if seen
        self.delivered = False  # the current backend's content, reasoning or a tool call reached the client

    # --- what the client has seen ---------------------------------------------------------------
    @property
    def phase(self) -> str:
        if self.held:
            return MID_TOOL_CALL
        if self.content:
            return MID_CONTENT
        if self.reasoning:
            return MID_REASONING
        return BEFORE_FIRST_TOKEN

    @property
    def text(self) -> str:
        return "".join(self.content)

    # --- switching ------------------------------------------------------------------------------
    def switch(self, failed_usage: Mapping[str, Any] | None) -> None:
        """The current backend failed: forget its unsent tool calls, remember what it consumed."""
        self.held, self.held_index = [], -1
        self.prior_usage = add_usage(self.prior_usage, failed_usage)
        self.usage = None
        self.delivered = False
        self.switched = True
        continuing = bool(self.content)
        self.echo = self.text if continuing else ""
        self.drop_reasoning = continuing
        self.reasoning_gap = bool(self.reasoning) and not continuing

    # --- relaying -------------------------------------------------------------------------------
    def accept(self, chunk: Chunk) -> list[Chunk]:
        """The chunks to send the client for one upstream chunk (often just that chunk)."""
        data = chunk.data
        if not self.switched and not self.held and self.identity is not None:
            # The common chunk, from the first backend with no tool call held: passed on as it
            # is, only noted. Anything else (a switch, tool calls, a repeated role) takes the
            # general path below, which this mirrors for the rest.
            choices = data.get("choices")
            delta = choices[0].get("delta") if choices else None
            if not delta or not (delta.get("tool_calls") or (self.role_sent and "role" in delta)):
                if delta:
                    self._note(delta)
                if data.get("usage"):
                    self.usage = data["usage"]
                return [chunk]
        if self.identity is None:
            self.identity = {k: data[k] for k in IDENTITY if k in data}
        changed = False
        if self.switched:
            for key, value in self.identity.items():
                if data.get(key, value) != value:
                    data[key] = value
                    changed = True
        choices = data.get("choices")
        choice = choices[0] if choices else None
        delta = choice.get("delta") if choice else None
        if data.get("usage"):
            self.usage = data["usage"]
            if self.prior_usage:
                data["usage"] = add_usage(self.prior_usage, data["usage"])
                changed = True
        if delta:
            if delta.get("tool_calls"):
                return self._hold(chunk if not changed else Chunk(data))
            # Only a switch or a repeated role gives _shape anything to do (echo, drop_reasoning
            # and reasoning_gap are set by switch() alone): most chunks skip the call.
            shaped = (self.switched or (self.role_sent and "role" in delta)) and self._shape(delta)
            changed |= shaped
            if shaped and not delta and not choice.get("finish_reason") and not data.get("usage") \
                    and "prompt_progress" not in data:  # progress the client asked for is news
                return []  # nothing left worth sending (an echo, a repeated role chunk)
        out = self._release() if self.held else []  # any other chunk means the calls are complete
        if delta is not None:
            self._note(delta)
        out.append(Chunk(data) if changed else chunk)
        return out

    def _note(self, delta: dict[str, Any]) -> None:
        """What the client is about to receive, for a later switch to continue from."""
        if "role" in delta:
            self.role_sent = True
        if delta.get("content"):
            self.content.append(delta["content"])
            self.delivered = True
        if delta.get("reasoning_content"):
            self.reasoning.append(delta["reasoning_content"])
            self.delivered = True

    def _shape(self, delta: dict[str, Any]) -> bool:
        """Apply the switch rules to one delta in place; True if it changed."""
        changed = False
        if "role" in delta and self.role_sent:
            del delta["role"]
            changed = True
            if delta.get("content") is None:
                delta.pop("content", None)
        reasoning = delta.get("reasoning_content")
        if reasoning and self.drop_reasoning:
            del delta["reasoning_content"]
            changed = True
        elif reasoning and self.reasoning_gap:
            delta["reasoning_content"] = "\n\n" + reasoning
            self.reasoning_gap, changed = False, True
        content = delta.get("content")
        if content and self.echo:
            # llama.cpp echoes a prefill in its first content delta (protocols §8); a model told
            # to continue may start over. Either way the client already has that text.
            if self.echo.startswith(content):
                self.echo = self.echo[len(content):]
                del delta["content"]
                changed = True
            elif content.startswith(self.echo):
                delta["content"] = content[len(self.echo):]
                self.echo, changed = "", True
                if not delta["content"]:
                    del delta["content"]
            else:
                self.echo = ""  # it simply continues
        return changed

    def _hold(self, chunk: Chunk) -> list[Chunk]:
        indexes = [c.get("index", 0) for c in chunk.data["choices"][0]["delta"]["tool_calls"]]
        out = self._release() if self.held and min(indexes) > self.held_index else []
        self.held.append(chunk)
        self.held_index = max(indexes)
        return out

    def _release(self) -> list[Chunk]:
        held, self.held, self.held_index = self.held, [], -1
        self.delivered = True
        return held
