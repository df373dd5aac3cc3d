"""Where OpenAI answers a 4xx, the gateway answers the same 4xx (issue #12), through the official
``openai`` client: the status, the ``param`` and a message that says what to fix, and then a
valid request that is served. Real clients' bodies (the Cline CLI's, captured) still pass, and
parts a backend cannot take are routed around, or dropped *with* a header and a warning."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import read_sse, user

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "cline-cli-3.0.65").glob("*.json"))
TOOL = {"type": "function", "function": {"name": "read_file", "description": "Read a file",
                                         "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
HARD = "Refactor the scheduler architecture and debug the race condition"

# (case, create() keyword arguments, param, words the message must hold)
CASES: list[tuple[str, dict[str, Any], str, tuple[str, ...]]] = [
    ("no model", {"model": openai.omit}, "model", ("must provide a model", "glm-4.7-local", "glm-4.7-cloud")),
    ("unknown content part", {"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": [{"type": "text", "text": "What is in this frame?"},
                                     {"type": "video_frame", "video_frame": {"data": "AAAA"}}]}]},
     "messages[2].content[1].type", ("video_frame", "text, image_url, input_audio, file, refusal")),
    ("logprobs not a boolean", {"logprobs": "yes"}, "logprobs", ("boolean",)),
    ("top_logprobs without logprobs", {"top_logprobs": 2}, "top_logprobs", ("logprobs",)),
    ("response_format of an unknown type", {"response_format": {"type": "yaml"}}, "response_format.type",
     ("yaml", "json_schema")),
    ("json_schema without a name", {"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
     "response_format.json_schema.name", ("required",)),
    ("tool_choice naming a tool not in tools", {"tools": [TOOL], "tool_choice": {
        "type": "function", "function": {"name": "write_file"}}}, "tool_choice", ("write_file", "read_file")),
    ("tool_choice required without tools", {"tool_choice": "required"}, "tool_choice", ("needs tools",)),
    ("a tool without a name", {"tools": [TOOL, {"type": "function", "function": {"description": "x"}}]},
     "tools[1].function.name", ("required",)),
    ("parallel_tool_calls not a boolean", {"parallel_tool_calls": "no"}, "parallel_tool_calls", ("boolean",)),
    ("seed of the wrong type", {"seed": "42"}, "seed", ("integer",)),
    ("five stop sequences", {"stop": ["a", "b", "c", "d", "e"]}, "stop", ("at most 4",)),
]


@pytest.mark.parametrize("case,kwargs,param,words", CASES, ids=[c[0] for c in CASES])
async def test_openai_client_gets_a_400_naming_the_param(client, case, kwargs, param, words):
    request = {"model": "glm-4.7", "messages": user(), **kwargs}
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(**request)
    error = caught.value
    assert error.status_code == 400 and error.param == param, error.body
    assert error.type == "invalid_request_error" and error.code
    for word in words:
        assert word in error.body["message"], error.body["message"]
    # ...and the gateway serves the next, valid request.
    reply = await client.chat.completions.create(model="glm-4.7", messages=user())
    assert reply.choices[0].message.content


async def test_a_missing_model_over_raw_http(http, gateway):
    async with http.post(gateway.make_url("/v1/chat/completions"), json={"messages": user()}) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert error["param"] == "model" and error["code"] == "missing_required_parameter"
    async with http.post(gateway.make_url("/v1/chat/completions"),
                         json={"model": "glm-4.7", "messages": user()}) as resp:
        assert resp.status == 200


async def test_what_real_clients_send_is_accepted(client):
    # Cline's own fields: native tools with "auto", parallel_tool_calls false, reasoning_effort,
    # stream_options; plus a well-formed use of every field the gateway now checks.
    stream = await client.chat.completions.create(
        model="glm-4.7", messages=user("fix the typo"), tools=[TOOL], tool_choice="auto", parallel_tool_calls=False,
        stream=True, stream_options={"include_usage": True}, reasoning_effort="low")
    assert [c async for c in stream]
    reply = await client.chat.completions.create(
        model="glm-4.7", messages=[*user("fix the typo"), {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "recieve"}],
        tools=[TOOL], tool_choice={"type": "function", "function": {"name": "read_file"}}, logprobs=True,
        top_logprobs=2, response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": {}}},
        seed=7, stop=["END"], user="someone")
    assert reply.choices[0].message.content
    # tool_choice "none"/"auto" without tools is harmless, and some clients always send it.
    assert await client.chat.completions.create(model="glm-4.7", messages=user(), tool_choice="none")


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.stem for f in FIXTURES])
async def test_captured_cline_cli_requests_are_served(http, gateway, fixture):
    body = json.loads(fixture.read_text())["body"]
    async with http.post(gateway.make_url("/v1/chat/completions"), json=body) as resp:
        assert resp.status == 200, await resp.text()
        events, _ = await read_sse(resp)
    assert events[-1] == "[DONE]"
    assert any(e.get("usage") for e in events[:-1])  # it asked for usage and got it


async def test_images_for_a_text_only_backend_are_dropped_with_a_header_and_a_warning(client, caplog):
    caplog.set_level(logging.WARNING, logger="gateway.request")
    logging.getLogger("gateway.request").addHandler(caplog.handler)  # in case propagation is off
    try:
        messages = [{"role": "user", "content": [{"type": "text", "text": "fix the typo in this"}, IMAGE]}]
        raw = await client.chat.completions.with_raw_response.create(model="glm-4.7", messages=messages)
        assert raw.headers["x-glm-dropped"] == "image_url" and raw.headers["x-glm-backend"] == "local"
        async with client.chat.completions.with_streaming_response.create(
                model="glm-4.7", messages=messages, stream=True) as streamed:
            assert streamed.headers["x-glm-dropped"] == "image_url"
            assert [c async for c in await streamed.parse()]
        # Text only: no header.
        raw = await client.chat.completions.with_raw_response.create(model="glm-4.7", messages=user())
        assert "x-glm-dropped" not in raw.headers
    finally:
        logging.getLogger("gateway.request").removeHandler(caplog.handler)
    # A set: with propagation on, the extra handler sees each record twice.
    warnings = {r.getMessage() for r in caplog.records if r.levelno == logging.WARNING}
    assert len(warnings) == 2 and all("local backend takes no image_url parts" in w for w in warnings)


async def test_audio_and_file_parts_for_a_text_only_backend_are_named_too(client):
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "fix the typo"},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,AAAA", "filename": "a.pdf"}}]}]
    raw = await client.chat.completions.with_raw_response.create(model="glm-4.7-cloud", messages=messages)
    assert raw.headers["x-glm-dropped"] == "file,input_audio" and raw.headers["x-glm-backend"] == "cloud"


async def test_images_are_routed_around_a_text_only_backend(gateway_factory, local_sim):
    # A hard task would go to the cloud, which takes no images here; local does: images win.
    server = await gateway_factory(local={"supports_images": True})
    async with openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="x", max_retries=0) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="glm-4.7", messages=[{"role": "user", "content": [{"type": "text", "text": HARD}, IMAGE]}])
    assert raw.headers["x-glm-backend"] == "local" and raw.headers["x-glm-route-reason"] == "images"
    assert "x-glm-dropped" not in raw.headers
    assert local_sim.requests[-1].body["messages"][0]["content"][1] == IMAGE  # sent as it came
