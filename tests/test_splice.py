"""The splice on its own (pure: no sockets, no clock): what one backend's chunks become, what
the client has seen, and the rules after a switch."""

from __future__ import annotations

from typing import Any

from backends import Chunk
from routing.events import MID_CONTENT, MID_REASONING, MID_TOOL_CALL
from routing.splice import Splice


def chunk(delta: dict[str, Any] | None = None, *, id: str = "a", finish: str | None = None,
          usage: dict[str, Any] | None = None) -> Chunk:
    data: dict[str, Any] = {"id": id, "created": 1 if id == "a" else 2, "model": f"m-{id}",
                            "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}]}
    if usage:
        data["usage"] = usage
    return Chunk(data, b"raw")


def call(index: int, arguments: str) -> dict[str, Any]:
    return {"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}


def deltas(out: list[Chunk]) -> list[dict[str, Any]]:
    return [c.data["choices"][0]["delta"] for c in out]


def test_one_backend_passes_chunks_on_untouched_and_notes_what_was_said():
    splice = Splice()
    stream = [chunk({"role": "assistant", "content": None}), chunk({"reasoning_content": "hm"}),
              chunk({"content": "Hel"}), chunk({"content": "lo"}),
              chunk(finish="stop", usage={"prompt_tokens": 3, "completion_tokens": 2})]
    out = [c for ch in stream for c in splice.accept(ch)]
    assert len(out) == len(stream) and all(a is b for a, b in zip(out, stream, strict=True))
    assert splice.text == "Hello" and splice.reasoning == ["hm"] and splice.phase == MID_CONTENT
    assert splice.usage == {"prompt_tokens": 3, "completion_tokens": 2} and splice.delivered


def test_a_repeated_role_is_dropped_or_stripped_on_one_backend_too():
    splice = Splice()
    splice.accept(chunk({"role": "assistant", "content": None}))
    splice.accept(chunk({"content": "a"}))
    assert splice.accept(chunk({"role": "assistant", "content": None})) == []
    out = splice.accept(chunk({"role": "assistant", "content": "b"}))
    assert deltas(out) == [{"content": "b"}] and out[0].raw is None  # changed: serialised anew
    assert splice.text == "ab"


def test_tool_calls_are_held_until_complete_and_then_sent_in_order():
    splice = Splice()
    splice.accept(chunk({"role": "assistant", "content": None}))
    assert splice.accept(chunk(call(0, '{"pa'))) == []
    assert splice.accept(chunk(call(0, 'th": 1}'))) == [] and splice.phase == MID_TOOL_CALL
    first = splice.accept(chunk(call(1, "{}")))  # the next call starts: the first is complete
    assert deltas(first) == [call(0, '{"pa'), call(0, 'th": 1}')]
    last = splice.accept(chunk(finish="tool_calls"))
    assert deltas(last) == [call(1, "{}"), {}]


def test_after_a_switch_mid_answer_the_echo_and_new_reasoning_go_and_the_identity_stays():
    splice = Splice()
    splice.accept(chunk({"role": "assistant", "content": None}))
    splice.accept(chunk({"content": "Hello, wor"}, usage=None))
    splice.switch({"prompt_tokens": 10, "completion_tokens": 3})
    assert splice.accept(chunk({"role": "assistant", "content": None}, id="b")) == []
    assert splice.accept(chunk({"reasoning_content": "again"}, id="b")) == []
    out = splice.accept(chunk({"content": "Hello, world"}, id="b"))  # repeats the start, then goes on
    assert deltas(out) == [{"content": "ld"}]
    assert (out[0].data["id"], out[0].data["created"], out[0].data["model"]) == ("a", 1, "m-a")
    tail = splice.accept(chunk(finish="stop", id="b", usage={"prompt_tokens": 12, "completion_tokens": 1}))
    assert tail[0].data["usage"]["prompt_tokens"] == 22 and tail[0].data["usage"]["completion_tokens"] == 4
    assert splice.text == "Hello, world"


def test_a_switch_after_reasoning_only_restarts_on_a_new_paragraph():
    splice = Splice()
    splice.accept(chunk({"role": "assistant", "content": None}))
    splice.accept(chunk({"reasoning_content": "first thought"}))
    assert splice.phase == MID_REASONING
    splice.switch(None)
    out = splice.accept(chunk({"reasoning_content": "second"}, id="b"))
    assert deltas(out) == [{"reasoning_content": "\n\nsecond"}]
