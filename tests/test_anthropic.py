"""The Anthropic Messages front, end to end: the official ``anthropic`` SDK as the caller, the
real app, and both simulators on loopback (llama-server's and Cerebras's wire formats)."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

import anthropic
import openai
import pytest

from backends.sim import Script
from tests.conftest import user

EASY = "Fix the typo in the readme"
HARD = "Refactor the architecture of the scheduler and debug the race condition in the worker pool"
SONNET, HAIKU = "claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001"
READ_TOOL = {"name": "Read", "description": "Read a file",
             "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}},
                              "required": ["file_path"]}}


@pytest.fixture
async def claude(gateway) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=str(gateway.make_url("")), api_key="unused",
                                        max_retries=0) as c:
        yield c


def sse_events(raw: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) pairs of an Anthropic SSE body, checking the event line matches."""
    out = []
    for frame in raw.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line and not line.startswith(":"))
        if "data" in lines:
            data = json.loads(lines["data"])
            assert lines.get("event") == data["type"], frame  # the SDKs need the event line
            out.append((lines["event"], data))
    return out


def check_order(events: list[tuple[str, dict[str, Any]]], complete: bool = True) -> None:
    """message_start, then per block start/deltas/stop with dense indices, then message_delta
    and message_stop (a complete stream), or an error event last and no message_stop."""
    names = [name for name, _ in events if name != "ping"]
    assert names[0] == "message_start" and names.count("message_start") == 1
    index, open_block = -1, False
    for name, data in events[1:]:
        if name == "content_block_start":
            assert not open_block and data["index"] == index + 1
            index, open_block = data["index"], True
        elif name == "content_block_delta":
            assert open_block and data["index"] == index
        elif name == "content_block_stop":
            assert open_block and data["index"] == index
            open_block = False
        elif name in ("message_delta", "message_stop", "error"):
            assert not open_block or name == "error"
    if complete:
        assert names[-2:] == ["message_delta", "message_stop"] and "error" not in names
    else:
        assert names[-1] == "error" and "message_stop" not in names


async def test_create_and_stream_through_both_backends(claude, local_sim, cloud_sim):
    for text, backend, sim in ((EASY, "local", local_sim), (HARD, "cloud", cloud_sim)):
        raw = await claude.messages.with_raw_response.create(
            model=SONNET, max_tokens=256, messages=[{"role": "user", "content": text}])
        message = await raw.parse()
        assert raw.headers["x-glm-backend"] == backend
        assert message.content[0].text == sim.script.content and message.stop_reason == "end_turn"
        assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
        async with claude.messages.stream(model=SONNET, max_tokens=256,
                                          messages=[{"role": "user", "content": text}]) as stream:
            streamed = await stream.get_final_message()
        assert streamed.content[0].text == sim.script.content and streamed.stop_reason == "end_turn"
        assert streamed.usage.output_tokens > 0


async def test_the_final_text_is_the_openai_fronts_for_the_same_upstream_answer(gateway, claude, cloud_sim):
    async with openai.AsyncOpenAI(base_url=str(gateway.make_url("/v1")), api_key="x", max_retries=0) as oai:
        chunks = [c async for c in await oai.chat.completions.create(
            model="glm-4.7-cloud", messages=user(HARD), stream=True)]
    via_openai = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    async with claude.messages.stream(model="glm-4.7-cloud", max_tokens=256,
                                      messages=[{"role": "user", "content": HARD}]) as stream:
        via_anthropic = await stream.get_final_text()
    assert via_anthropic == via_openai == cloud_sim.script.content


async def test_a_tool_use_turn_gives_a_tool_use_block_whose_input_parses(claude, local_sim, gateway, http):
    local_sim.script = Script(content="Reading it.", tool_calls=(
        {"name": "Read", "arguments": '{"file_path": "/src/a.py"}'},))
    request = dict(model=HAIKU, max_tokens=256, tools=[READ_TOOL], messages=[{"role": "user", "content": EASY}])
    async with claude.messages.stream(**request) as stream:
        message = await stream.get_final_message()
    kinds = [b.type for b in message.content]
    assert kinds == ["text", "tool_use"] and message.stop_reason == "tool_use"
    call = message.content[1]
    assert call.name == "Read" and call.input == {"file_path": "/src/a.py"}
    created = await claude.messages.create(**request)
    assert created.content[1].input == {"file_path": "/src/a.py"} and created.stop_reason == "tool_use"
    # The next turn sends the result back; it is served like any other.
    follow = await claude.messages.create(model=HAIKU, max_tokens=256, tools=[READ_TOOL], messages=[
        {"role": "user", "content": EASY},
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "x = 1"}]}])
    assert follow.content and local_sim.requests[-1].body["messages"][-1] == {
        "role": "tool", "tool_call_id": call.id, "content": "x = 1"}


async def test_thinking_arrives_as_thinking_blocks(claude, cloud_sim):
    cloud_sim.script = Script(content="It is 4.", reasoning="2 and 2 make 4.")
    request = dict(model="glm-4.7-cloud", max_tokens=4096, thinking={"type": "enabled", "budget_tokens": 2048},
                   messages=[{"role": "user", "content": "What is 2+2?"}])
    async with claude.messages.stream(**request) as stream:
        message = await stream.get_final_message()
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "2 and 2 make 4." and message.content[0].signature
    created = await claude.messages.create(**request)
    assert [b.type for b in created.content] == ["thinking", "text"]


async def test_every_stream_has_the_exact_event_order(gateway, http, local_sim):
    local_sim.script = Script(content="Let me look.", reasoning="First the file.", tool_calls=(
        {"name": "Read", "arguments": '{"file_path": "a.py"}'}, {"name": "Read", "arguments": '{"file_path": "b.py"}'}))
    async with http.post(gateway.make_url("/v1/messages?beta=true"), headers={"anthropic-version": "2023-06-01"},
                         json={"model": HAIKU, "max_tokens": 2048, "stream": True, "tools": [READ_TOOL],
                               "thinking": {"type": "enabled", "budget_tokens": 1024},
                               "messages": [{"role": "user", "content": EASY}]}) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = sse_events(await resp.text())
    check_order(events)
    starts = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert starts == ["thinking", "text", "tool_use", "tool_use"]
    final = events[-2][1]
    assert final["delta"]["stop_reason"] == "tool_use"
    assert set(final["usage"]) == {"input_tokens", "output_tokens", "cache_read_input_tokens",
                                   "cache_creation_input_tokens"}
    assert all(isinstance(v, int) for v in final["usage"].values())
    start_usage = events[0][1]["message"]["usage"]
    assert start_usage["input_tokens"] > 0 and set(start_usage) == set(final["usage"])


async def test_count_tokens_agrees_with_the_gateways_own_counter(gateway, claude, token_counter):
    from gateway.anthropic.request import parse_messages_request
    from routing.features import extract_features

    body = {"model": SONNET, "system": "You are terse.", "tools": [READ_TOOL],
            "messages": [{"role": "user", "content": HARD}]}
    counted = await claude.messages.count_tokens(**body)
    internal = parse_messages_request(json.dumps(body).encode(), "application/json", counting=True).body
    assert counted.input_tokens == extract_features(internal, token_counter).prompt_tokens > 0


async def test_a_follow_up_turns_message_start_counts_its_new_text_exactly(gateway, claude, http, local_sim):
    # A follow-up's new tool result is only bounded when routing decides (it is counted while
    # the upstream works); the input count the stream opens with is still the exact one.
    local_sim.script = Script(content="Read it.")
    result = "\n".join(f"    def handler_{i}(self, request):  return self.route(request, {i})" for i in range(80))
    first = [{"role": "user", "content": "Fix the typo in src/app.py"}]
    turn = [*first, {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "src/app.py"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": result}]}]
    starts = []
    for messages in (first, turn):
        async with http.post(gateway.make_url("/v1/messages"), headers={"anthropic-version": "2023-06-01"},
                             json={"model": HAIKU, "max_tokens": 1024, "stream": True, "tools": [READ_TOOL],
                                   "messages": messages}) as resp:
            assert resp.status == 200, await resp.text()
            events = sse_events(await resp.text())
        check_order(events)
        starts.append(events[0][1]["message"]["usage"]["input_tokens"])
    # Counted afterwards: count_tokens shares the gateway's counter, and counting first would
    # leave nothing new for the turn to defer.
    counted = await claude.messages.count_tokens(model=HAIKU, tools=[READ_TOOL], messages=turn)
    assert starts[1] == counted.input_tokens > starts[0] + len(result.split())


async def test_a_prefill_is_continued_and_not_repeated(gateway, claude, local_sim):
    # Claude Code's topic check prefills "{"; llama.cpp echoes a prefill in its first delta.
    local_sim.script = Script(content='"isNewTopic": false}')
    request = dict(model=HAIKU, max_tokens=128, messages=[
        {"role": "user", "content": "Is this a new topic? Answer in JSON."}, {"role": "assistant", "content": "{"}])
    created = await claude.messages.create(**request)
    async with claude.messages.stream(**request) as stream:
        streamed = await stream.get_final_text()
    for text in (created.content[0].text, streamed):
        assert json.loads("{" + text) == {"isNewTopic": False}


async def test_output_config_and_platform_fields(claude, cloud_sim, gateway, http):
    # effort steers a thinking model's reasoning; format is structured output (OpenAI's
    # response_format, which each backend enforces); fields that steer Anthropic's platform are
    # accepted and change nothing; MCP servers, which only Anthropic's platform connects, are a 400.
    schema = {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}
    await claude.messages.create(
        model="glm-4.7-cloud", max_tokens=4096, messages=[{"role": "user", "content": "Name this session."}],
        thinking={"type": "enabled", "budget_tokens": 2048},
        extra_body={"output_config": {"effort": "max", "format": {"type": "json_schema", "schema": schema}},
                    "speed": "fast", "service_tier": "auto", "context_management": {"edits": []}})
    sent = cloud_sim.requests[-1].body
    assert sent["reasoning_effort"] == "high"
    assert sent["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "output", "schema": schema, "strict": True}}
    assert not {"speed", "service_tier", "context_management", "output_config"} & set(sent)
    with pytest.raises(anthropic.BadRequestError) as info:
        await claude.messages.create(model="glm-4.7-cloud", max_tokens=64, messages=[{"role": "user", "content": "x"}],
                                     extra_body={"mcp_servers": [{"type": "url", "url": "https://mcp.example"}]})
    assert info.value.body["error"]["message"].startswith("mcp_servers")
