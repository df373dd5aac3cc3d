"""Every client mistake gets an OpenAI-shaped 4xx, never a traceback, and the gateway serves on."""

from __future__ import annotations

import orjson
import pytest

from tests.conftest import user

OK = {"model": "glm-4.7", "messages": user()}

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


async def test_missing_model_means_the_routed_id(http, gateway):
    async with http.post(gateway.make_url("/v1/chat/completions"), json={"messages": user()}) as resp:
        assert resp.status == 200
        assert resp.headers["x-glm-route-reason"] == "simple"
