"""The relay is faithful: what the client receives is what the backend sent, field for field,
after the documented normalisations (Cerebras ``reasoning`` -> ``reasoning_content``, usage
stripped unless asked for, ``model_used`` on the tail chunks, one ``[DONE]``)."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from backends.sim import Script
from tests.conftest import read_sse, user

VOLATILE = ("id", "created", "system_fingerprint", "timings", "time_info")
TOOL_SCRIPT = Script(
    content="I will look at the file.",
    tool_calls=({"name": "read_file", "arguments": '{"path": "src/main.py", "mode": "text"}'},
                {"name": "list_files", "arguments": '{"path": "src"}'}),
)


def mask(chunk: Any) -> Any:
    """Blank the values that differ between two runs of the same request."""
    if not isinstance(chunk, dict):
        return chunk
    chunk = copy.deepcopy(chunk)
    for key in VOLATILE:
        if key in chunk:
            chunk[key] = "*"
    if isinstance(chunk.get("usage"), dict):
        chunk["usage"].pop("prompt_tokens_details", None)  # llama.cpp's cache differs on a replay
    for choice in chunk.get("choices") or ():
        for call in (choice.get("delta") or {}).get("tool_calls") or ():
            if "id" in call:
                call["id"] = "*"
    return chunk


def expected_relay(direct: list[Any], *, backend: str, include_usage: bool) -> list[Any]:
    """The documented normalisations, applied to what the backend sent directly."""
    out = []
    for chunk in direct:
        if chunk == "[DONE]":
            continue
        chunk = copy.deepcopy(chunk)
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if "reasoning" in delta:
                delta["reasoning_content"] = delta.pop("reasoning")
        choices = chunk.get("choices")
        finish = choices[0].get("finish_reason") if choices else None
        if chunk.get("usage") and not include_usage:
            if not choices:
                continue
            del chunk["usage"]
        if finish or chunk.get("usage"):
            chunk["model_used"] = backend
        out.append(chunk)
    return out + ["[DONE]"]


async def direct_stream(http, sim, body: dict[str, Any]) -> list[Any]:
    headers = {"Authorization": "Bearer " + sim.api_key} if getattr(sim, "api_key", None) else {}
    async with http.post(sim.url + "/chat/completions", data=orjson.dumps(body), headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        events, _ = await read_sse(resp)
    return events


@pytest.mark.parametrize("backend", ["local", "cloud"])
@pytest.mark.parametrize("include_usage", [True, False])
@pytest.mark.parametrize("script", ["text", "tools"])
async def test_relay_is_field_for_field(gateway, http, local_sim, cloud_sim, backend, include_usage, script):
    sim = local_sim if backend == "local" else cloud_sim
    if script == "tools":
        sim.script = TOOL_SCRIPT
    body = {"model": f"glm-4.7-{backend}", "stream": True, "messages": user("read main.py"),
            "tools": [{"type": "function", "function": {"name": "read_file", "parameters": {}}}]}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    async with http.post(gateway.make_url("/v1/chat/completions"), json=body) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["x-glm-backend"] == backend
        relayed, _ = await read_sse(resp)

    upstream_body = sim.requests[-1].body
    direct = await direct_stream(http, sim, upstream_body)
    assert [mask(c) for c in relayed] == [
        mask(c) for c in expected_relay(direct, backend=backend, include_usage=include_usage)]
    assert relayed.count("[DONE]") == 1 and relayed[-1] == "[DONE]"


async def test_openai_client_streams_local_with_reasoning_and_usage(client, local_sim):
    stream = await client.chat.completions.create(
        model="glm-4.7", messages=user(), stream=True, stream_options={"include_usage": True})
    content, reasoning, usage, tail = "", "", None, []
    async for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        if chunk.choices:
            delta = chunk.choices[0].delta
            content += delta.content or ""
            reasoning += getattr(delta, "reasoning_content", None) or ""
        if getattr(chunk, "model_used", None):
            tail.append(chunk.model_used)
    assert content == local_sim.script.content
    assert reasoning == local_sim.script.reasoning
    assert usage is not None and usage.completion_tokens > 0 and usage.prompt_tokens > 0
    assert tail and set(tail) == {"local"}


async def test_openai_client_gets_cerebras_reasoning_as_reasoning_content(client, cloud_sim):
    stream = await client.chat.completions.create(
        model="glm-4.7-cloud", messages=user(), stream=True, stream_options={"include_usage": True})
    content, reasoning, usage = "", "", None
    async for chunk in stream:
        usage = chunk.usage or usage
        if chunk.choices:
            delta = chunk.choices[0].delta
            assert getattr(delta, "reasoning", None) is None
            content += delta.content or ""
            reasoning += getattr(delta, "reasoning_content", None) or ""
    assert reasoning == cloud_sim.script.reasoning
    assert content == cloud_sim.script.content
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@pytest.mark.parametrize("model", ["glm-4.7-local", "glm-4.7-cloud"])
async def test_openai_client_assembles_tool_calls(client, local_sim, cloud_sim, model):
    local_sim.script = cloud_sim.script = TOOL_SCRIPT
    stream = await client.chat.completions.create(model=model, messages=user("look"), stream=True)
    calls: dict[int, dict[str, str]] = {}
    finish = None
    async for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for call in choice.delta.tool_calls or ():
                slot = calls.setdefault(call.index, {"name": "", "arguments": ""})
                slot["name"] += call.function.name or ""
                slot["arguments"] += call.function.arguments or ""
    assert finish == "tool_calls"
    assert [calls[i] for i in sorted(calls)] == [dict(c) for c in TOOL_SCRIPT.tool_calls]


async def test_non_streaming_names_backend_and_normalises_reasoning(client, cloud_sim, local_sim):
    for model, backend, sim in (("glm-4.7-cloud", "cloud", cloud_sim), ("glm-4.7-local", "local", local_sim)):
        raw = await client.chat.completions.with_raw_response.create(model=model, messages=user())
        completion = raw.parse()
        assert raw.headers["x-glm-backend"] == backend
        assert completion.model_used == backend
        message = completion.choices[0].message
        assert message.content == sim.script.content
        assert message.reasoning_content == sim.script.reasoning
        assert completion.usage.completion_tokens > 0


async def test_usage_is_stripped_when_client_did_not_ask(http, gateway, cloud_sim):
    body = {"model": "glm-4.7-cloud", "stream": True, "messages": user()}
    async with http.post(gateway.make_url("/v1/chat/completions"), json=body) as resp:
        events, _ = await read_sse(resp)
    assert not any(isinstance(e, dict) and e.get("usage") for e in events)
    # ...although the gateway always asks upstream (accounting needs it).
    assert cloud_sim.requests[-1].body["stream_options"] == {"include_usage": True}


async def test_backends_complete_without_streaming(local_sim, cloud_sim):
    """The Backend interface's own non-streaming call (the router streams even those, but a
    backend still knows how), with Cerebras's reasoning normalised."""
    from backends import Cerebras, LlamaCpp
    from tests.conftest import make_config

    cfg = make_config(local_sim.url, cloud_sim.url)
    async with LlamaCpp.make_session() as ls, Cerebras.make_session() as cs:
        local = LlamaCpp("local", cfg.backends["local"], ls)
        cloud = Cerebras("cloud", cfg.backends["cloud"], cs)
        for backend, sim in ((local, local_sim), (cloud, cloud_sim)):
            data = await backend.complete({"messages": user(), "max_tokens": 100})
            message = data["choices"][0]["message"]
            assert message["content"] == sim.script.content
            assert message["reasoning_content"] == sim.script.reasoning and "reasoning" not in message
            assert data["usage"]["completion_tokens"] > 0
        assert cloud_sim.requests[-1].body["max_completion_tokens"] == 100
        assert "stream_options" not in cloud_sim.requests[-1].body
