"""Every client mistake gets an OpenAI-shaped 4xx, never a traceback, and the gateway serves on."""

from __future__ import annotations

import orjson
import pytest

from tests.conftest import user

OK = {"model": "glm-4.7", "messages": user()}
TOOL = {"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}


def body(**fields) -> bytes:
    return orjson.dumps({**OK, **fields})


def parts(*content: dict) -> bytes:
    return body(messages=[{"role": "user", "content": list(content)}])


# (case, body bytes, content-type, expected status, expected param or None)
CASES = [
    ("invalid json", b'{"model": "glm-4.7", "messages": [', "application/json", 400, None),
    ("not an object", b'[1, 2, 3]', "application/json", 400, None),
    ("json string", b'"hello"', "application/json", 400, None),
    ("messages missing", orjson.dumps({"model": "glm-4.7"}), "application/json", 400, "messages"),
    ("messages empty", orjson.dumps({**OK, "messages": []}), "application/json", 400, "messages"),
    ("messages not a list", orjson.dumps({**OK, "messages": {"role": "user"}}), "application/json", 400,
     "messages"),
    ("message not an object", orjson.dumps({**OK, "messages": ["hi"]}), "application/json", 400,
     "messages[0]"),
    ("role missing", orjson.dumps({**OK, "messages": [{"content": "hi"}]}), "application/json", 400,
     "messages[0].role"),
    ("role not a string", orjson.dumps({**OK, "messages": [{"role": [], "content": "hi"}]}), "application/json", 400,
     "messages[0].role"),
    ("unknown role", orjson.dumps({**OK, "messages": [{"role": "wizard", "content": "hi"}]}),
     "application/json", 400, "messages[0].role"),
    ("content a number", orjson.dumps({**OK, "messages": [{"role": "user", "content": 42}]}),
     "application/json", 400, "messages[0].content"),
    ("content part without type", orjson.dumps({**OK, "messages": [{"role": "user", "content": [{"text": "x"}]}]}),
     "application/json", 400, "messages[0].content[0]"),
    ("user content null", orjson.dumps({**OK, "messages": [{"role": "user", "content": None}]}),
     "application/json", 400, "messages[0].content"),
    ("stream a string", orjson.dumps({**OK, "stream": "yes"}), "application/json", 400, "stream"),
    ("temperature a string", orjson.dumps({**OK, "temperature": "hot"}), "application/json", 400,
     "temperature"),
    ("temperature out of range", orjson.dumps({**OK, "temperature": 7}), "application/json", 400,
     "temperature"),
    ("max_tokens zero", orjson.dumps({**OK, "max_tokens": 0}), "application/json", 400, "max_tokens"),
    ("max_tokens a float", orjson.dumps({**OK, "max_tokens": 12.5}), "application/json", 400, "max_tokens"),
    ("max_tokens a bool", orjson.dumps({**OK, "max_tokens": True}), "application/json", 400, "max_tokens"),
    ("top_p negative", orjson.dumps({**OK, "top_p": -0.1}), "application/json", 400, "top_p"),
    ("n two", orjson.dumps({**OK, "n": 2}), "application/json", 400, "n"),
    ("stream_options not an object", orjson.dumps({**OK, "stream_options": True}), "application/json", 400,
     "stream_options"),
    ("include_usage not a bool", orjson.dumps({**OK, "stream_options": {"include_usage": "y"}}),
     "application/json", 400, "stream_options.include_usage"),
    ("tools not a list", orjson.dumps({**OK, "tools": {"a": 1}}), "application/json", 400, "tools"),
    ("model a number", orjson.dumps({**OK, "model": 7}), "application/json", 400, "model"),
    ("model missing", orjson.dumps({"messages": user()}), "application/json", 400, "model"),
    ("model empty", body(model=""), "application/json", 400, "model"),
    ("unknown content part", parts({"type": "text", "text": "look"}, {"type": "video_frame", "data": "x"}),
     "application/json", 400, "messages[0].content[1].type"),
    ("image part without image_url", parts({"type": "image_url"}), "application/json", 400,
     "messages[0].content[0].image_url"),
    ("image_url a string", parts({"type": "image_url", "image_url": "data:image/png;base64,AAAA"}),
     "application/json", 400, "messages[0].content[0].image_url"),
    ("image_url without url", parts({"type": "image_url", "image_url": {"detail": "low"}}), "application/json",
     400, "messages[0].content[0].image_url.url"),
    ("input_audio a string", parts({"type": "input_audio", "input_audio": "wav"}), "application/json", 400,
     "messages[0].content[0].input_audio"),
    ("refusal not a string", body(messages=[*user(), {"role": "assistant", "content": [
        {"type": "refusal", "refusal": 1}]}]), "application/json", 400, "messages[1].content[0].refusal"),
    ("tool message without tool_call_id", body(messages=[*user(), {"role": "tool", "content": "42"}]),
     "application/json", 400, "messages[1].tool_call_id"),
    ("tool call arguments an object", body(messages=[*user(), {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "read_file", "arguments": {"path": "a"}}}]}]),
     "application/json", 400, "messages[1].tool_calls[0].function.arguments"),
    ("logprobs a string", body(logprobs="yes"), "application/json", 400, "logprobs"),
    ("top_logprobs without logprobs", body(top_logprobs=3), "application/json", 400, "top_logprobs"),
    ("top_logprobs over 20", body(logprobs=True, top_logprobs=21), "application/json", 400, "top_logprobs"),
    ("response_format a string", body(response_format="json"), "application/json", 400, "response_format"),
    ("response_format without type", body(response_format={}), "application/json", 400, "response_format.type"),
    ("response_format unknown type", body(response_format={"type": "xml"}), "application/json", 400,
     "response_format.type"),
    ("json_schema missing", body(response_format={"type": "json_schema"}), "application/json", 400,
     "response_format.json_schema"),
    ("json_schema without name", body(response_format={"type": "json_schema", "json_schema": {"schema": {}}}),
     "application/json", 400, "response_format.json_schema.name"),
    ("json_schema schema a string", body(response_format={"type": "json_schema", "json_schema": {
        "name": "answer", "schema": "object"}}), "application/json", 400, "response_format.json_schema.schema"),
    ("tool not an object", body(tools=["read_file"]), "application/json", 400, "tools[0]"),
    ("tool without type", body(tools=[{"function": {"name": "read_file"}}]), "application/json", 400,
     "tools[0].type"),
    ("tool of another type", body(tools=[{"type": "custom", "custom": {"name": "x"}}]), "application/json", 400,
     "tools[0].type"),
    ("tool name not a string", body(tools=[TOOL, {"type": "function", "function": {"name": 3}}]),
     "application/json", 400, "tools[1].function.name"),
    ("tool parameters a list", body(tools=[{"type": "function", "function": {"name": "a", "parameters": []}}]),
     "application/json", 400, "tools[0].function.parameters"),
    ("tool_choice unknown string", body(tools=[TOOL], tool_choice="sometimes"), "application/json", 400,
     "tool_choice"),
    ("tool_choice required without tools", body(tool_choice="required"), "application/json", 400, "tool_choice"),
    ("tool_choice names an unknown tool", body(tools=[TOOL], tool_choice={
        "type": "function", "function": {"name": "write_file"}}), "application/json", 400, "tool_choice"),
    ("tool_choice names a tool but no tools", body(tool_choice={"type": "function", "function": {"name": "a"}}),
     "application/json", 400, "tool_choice"),
    ("tool_choice without function name", body(tools=[TOOL], tool_choice={"type": "function", "function": {}}),
     "application/json", 400, "tool_choice.function.name"),
    ("tool_choice a number", body(tools=[TOOL], tool_choice=1), "application/json", 400, "tool_choice"),
    ("parallel_tool_calls a string", body(parallel_tool_calls="false"), "application/json", 400,
     "parallel_tool_calls"),
    ("seed a string", body(seed="42"), "application/json", 400, "seed"),
    ("seed a float", body(seed=4.2), "application/json", 400, "seed"),
    ("stop a number", body(stop=7), "application/json", 400, "stop"),
    ("five stop sequences", body(stop=["a", "b", "c", "d", "e"]), "application/json", 400, "stop"),
    ("stop sequence a number", body(stop=["END", 7]), "application/json", 400, "stop[1]"),
    ("user a number", body(user=42), "application/json", 400, "user"),
    ("unknown model", orjson.dumps({**OK, "model": "gpt-99"}), "application/json", 404, "model"),
    ("wrong content-type", orjson.dumps(OK), "text/plain", 415, None),
    ("form content-type", b"model=glm-4.7", "application/x-www-form-urlencoded", 415, None),
]


def assert_openai_error(body: dict, status: int) -> dict:
    assert set(body) == {"error"}, body
    error = body["error"]
    assert {"message", "type", "param", "code"} <= set(error), error
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in error["message"]
    return error


@pytest.mark.parametrize("case,raw,content_type,status,param", CASES, ids=[c[0] for c in CASES])
async def test_bad_input_gets_openai_shaped_4xx(http, gateway, case, raw, content_type, status, param):
    url = gateway.make_url("/v1/chat/completions")
    async with http.post(url, data=raw, headers={"Content-Type": content_type}) as resp:
        assert resp.status == status, await resp.text()
        assert resp.headers["Content-Type"].startswith("application/json")
        error = assert_openai_error(await resp.json(), status)
    assert error["param"] == param
    # ...and the gateway still serves.
    async with http.post(url, json={**OK, "stream": False}) as resp:
        assert resp.status == 200, await resp.text()


async def test_unknown_model_lists_served_ids(http, gateway):
    async with http.post(gateway.make_url("/v1/chat/completions"), json={**OK, "model": "gpt-99"}) as resp:
        error = assert_openai_error(await resp.json(), 404)
    for model in ("glm-4.7", "glm-4.7-local", "glm-4.7-cloud"):
        assert model in error["message"]
    assert error["code"] == "model_not_found"


async def test_body_over_the_limit_is_413(http, gateway_factory):
    server = await gateway_factory(server={"max_body_bytes": 4096})
    big = {**OK, "messages": user("x" * 10_000)}
    async with http.post(server.make_url("/v1/chat/completions"), json=big) as resp:
        assert resp.status == 413
        assert_openai_error(await resp.json(), 413)
    async with http.post(server.make_url("/v1/chat/completions"), json=OK) as resp:
        assert resp.status == 200


@pytest.mark.parametrize("method,path,status", [
    ("GET", "/v1/chat/completions", 405),
    ("PUT", "/v1/chat/completions", 405),
    ("DELETE", "/v1/models", 405),
    ("GET", "/v1/nope", 404),
])
async def test_wrong_method_or_path_is_openai_shaped(http, gateway, method, path, status):
    async with http.request(method, gateway.make_url(path)) as resp:
        assert resp.status == status
        assert_openai_error(await resp.json(), status)


async def test_missing_model_is_a_400_naming_the_served_ids(http, gateway):
    # OpenAI's answer too: a client that forgot the field learns why, instead of getting
    # whichever model a default picked.
    async with http.post(gateway.make_url("/v1/chat/completions"), json={"messages": user()}) as resp:
        assert resp.status == 400
        error = assert_openai_error(await resp.json(), 400)
    assert error["param"] == "model" and error["code"] == "missing_required_parameter"
    assert "must provide a model" in error["message"]
    for model in ("glm-4.7", "glm-4.7-local", "glm-4.7-cloud"):
        assert model in error["message"]
