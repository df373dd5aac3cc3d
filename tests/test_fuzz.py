"""Property-based: whatever a client sends, the gateway answers below 500 without a traceback,
and keeps serving. The gateway and both simulators run on a background event loop; hypothesis
drives them with a plain HTTP client."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from typing import Any, Iterator

import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.sim import CerebrasSim, LlamaCppSim
from gateway.app import create_app
from routing import TokenCounter
from tests.conftest import CLOUD_KEY, make_config

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=15,
)
NAME = st.sampled_from(["read_file", "write_file", ""]) | JSON
PART = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "input_audio", "file", "refusal", "video_frame", "x"]) | JSON},
    optional={"text": st.text(max_size=50) | JSON,
              "image_url": st.fixed_dictionaries({"url": st.text(max_size=30)}) | JSON,
              "input_audio": st.fixed_dictionaries({"data": st.text(max_size=20), "format": st.just("wav")}) | JSON,
              "file": st.fixed_dictionaries({}, optional={"file_id": st.text(max_size=10)}) | JSON,
              "refusal": st.text(max_size=20) | JSON})
TOOL_CALL = st.fixed_dictionaries({"id": st.text(max_size=8) | JSON, "type": st.just("function") | JSON},
                                  optional={"function": st.fixed_dictionaries(
                                      {"name": NAME}, optional={"arguments": st.text(max_size=20) | JSON}) | JSON})
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool", "developer", "wizard"]) | JSON},
    optional={"content": st.text(max_size=80) | st.lists(PART, max_size=3) | JSON,
              "tool_calls": st.lists(TOOL_CALL, max_size=2) | JSON, "tool_call_id": st.text(max_size=8) | JSON,
              "reasoning_content": JSON, "name": JSON},
)
# Well-formed turns, so that examples get past the messages and reach the fields after them.
GOOD_MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user"]),
     "content": st.text(max_size=40) | st.lists(
         st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=20)})
         | st.fixed_dictionaries({"type": st.just("image_url"),
                                  "image_url": st.fixed_dictionaries({"url": st.just("data:image/png;base64,AA")})}),
         min_size=1, max_size=2)})
TOOL = st.fixed_dictionaries(
    {"type": st.sampled_from(["function", "custom"]) | JSON},
    optional={"function": st.fixed_dictionaries({"name": NAME}, optional={"parameters": st.just({}) | JSON}) | JSON})
TOOL_CHOICE = (st.sampled_from(["none", "auto", "required", "sometimes"])
               | st.fixed_dictionaries({"type": st.just("function") | JSON},
                                       optional={"function": st.fixed_dictionaries({}, optional={"name": NAME})})
               | JSON)
RESPONSE_FORMAT = st.fixed_dictionaries(
    {}, optional={"type": st.sampled_from(["text", "json_object", "json_schema", "xml"]) | JSON,
                  "json_schema": st.fixed_dictionaries({}, optional={"name": NAME, "schema": st.just({}) | JSON,
                                                                     "strict": st.booleans() | JSON}) | JSON}) | JSON
NEAR_VALID = st.fixed_dictionaries(
    {"messages": st.lists(GOOD_MESSAGE, min_size=1, max_size=2) | st.lists(MESSAGE, min_size=0, max_size=4) | JSON},
    optional={"model": st.sampled_from(["glm-4.7", "glm-4.7-local", "glm-4.7-cloud", "gpt-4", ""]) | JSON,
              "stream": st.booleans() | JSON, "temperature": st.floats(-1, 3) | JSON,
              "max_tokens": st.integers(-5, 50_000) | JSON, "top_p": JSON, "n": st.integers(0, 3) | JSON,
              "stream_options": st.fixed_dictionaries({}, optional={"include_usage": JSON}) | JSON,
              "tools": st.lists(TOOL, max_size=2) | JSON, "tool_choice": TOOL_CHOICE,
              "parallel_tool_calls": st.booleans() | JSON, "response_format": RESPONSE_FORMAT,
              "logprobs": st.booleans() | JSON, "top_logprobs": st.integers(-1, 25) | JSON,
              "stop": st.lists(st.text(max_size=5), max_size=6) | JSON, "top_k": JSON,
              "seed": st.integers() | JSON, "user": st.text(max_size=10) | JSON},
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Background:
    """The gateway and its simulators, served from a thread with its own event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.url = ""

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    async def start(self) -> None:
        self.local = LlamaCppSim(tokens_per_s=None)
        self.cloud = CerebrasSim(tokens_per_s=None, api_key=CLOUD_KEY)
        await self.local.start()
        await self.cloud.start()
        cfg = make_config(self.local.url, self.cloud.url,
                          limits={"requests_per_minute_per_key": 100_000, "max_streams_per_key": 1000},
                          routing={"backoff_base_s": 0.01})
        self.runner = web.AppRunner(create_app(cfg, token_counter=TokenCounter.default()), handler_cancellation=True)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        await self.runner.cleanup()
        await self.local.stop()
        await self.cloud.stop()


class Response:
    def __init__(self, status: int, body: bytes) -> None:
        self.status_code, self.text = status, body.decode("utf-8", "replace")

    def json(self) -> Any:
        return orjson.loads(self.text)


class Client:
    """A plain blocking HTTP client (stdlib), one connection per request."""

    def __init__(self, url: str) -> None:
        self.host, self.port = url.removeprefix("http://").split(":")

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str = "") -> Response:
        conn = http.client.HTTPConnection(self.host, int(self.port), timeout=30)
        try:
            headers = {"Content-Type": content_type} if content_type else {}
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return Response(resp.status, resp.read())
        finally:
            conn.close()

    def post(self, path: str, json: Any = None, content: bytes | None = None, content_type: str = "application/json"):
        return self.request("POST", path, orjson.dumps(json) if content is None else content, content_type)

    def get(self, path: str) -> Response:
        return self.request("GET", path)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Background, Client]]:
    bg = Background()
    bg.thread.start()
    bg.call(bg.start())
    yield bg, Client(bg.url)
    bg.call(bg.stop())
    bg.loop.call_soon_threadsafe(bg.loop.stop)
    bg.thread.join(10)


def check(response: Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    assert "Traceback" not in response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["message"], str) and error["message"]
        assert {"type", "param", "code"} <= set(error)


def still_serving(client: Client) -> None:
    ok = client.post("/v1/chat/completions", json={"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}]})
    assert ok.status_code == 200, ok.text


@FUZZ
@given(body=JSON)
def test_arbitrary_json(served, body):
    _, client = served
    # stdlib json: it writes integers of any size, which clients may send and orjson refuses.
    check(client.post("/v1/chat/completions", content=json.dumps(body).encode()))


@FUZZ
@given(body=NEAR_VALID)
def test_near_valid_openai_bodies(served, body):
    _, client = served
    # stdlib json: it writes integers of any size, which clients may send and orjson refuses.
    check(client.post("/v1/chat/completions", content=json.dumps(body).encode()))


@FUZZ
@given(raw=st.binary(max_size=200), content_type=st.sampled_from(["application/json", "text/plain", ""]))
def test_arbitrary_bytes(served, raw, content_type):
    _, client = served
    check(client.post("/v1/chat/completions", content=raw, content_type=content_type))


def test_gateway_still_serves_after_the_fuzzing(served):
    _, client = served
    still_serving(client)
    assert client.get("/health").json()["status"] == "ok"
