"""The Anthropic front's errors: Anthropic's shape and statuses, for bad input (the corpus in
tests/anthropic_bad_input.py) and for the gateway's own refusals (a key, a rate limit, no backend)."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from backends.sim import Fault
from tests.anthropic_bad_input import _OK, CASES

HEADERS = {"anthropic-version": "2023-06-01", "content-type": "application/json"}


def assert_anthropic_error(status: int, body: dict, want_status: int, want_type: str, case: str) -> None:
    assert status == want_status, (case, status, body)
    assert body.get("type") == "error" and set(body["error"]) == {"type", "message"}, (case, body)
    assert body["error"]["type"] == want_type and body["error"]["message"], (case, body)
    assert "Traceback" not in body["error"]["message"]


async def test_the_bad_input_corpus_gets_anthropic_4xx_and_the_next_request_is_served(gateway, http):
    assert len(CASES) >= 30
    url = gateway.make_url("/v1/messages")
    for case, body, want_status, want_type in CASES:
        data = body if isinstance(body, str) else json.dumps(body)
        async with http.post(url, data=data, headers=HEADERS) as resp:
            assert_anthropic_error(resp.status, await resp.json(), want_status, want_type, case)
            if want_status == 400:
                assert resp.headers["x-should-retry"] == "false"  # as Anthropic says: the caller must fix it
        # Nothing of the bad request lingers: a valid one right after is served.
        async with http.post(url, json=_OK, headers=HEADERS) as resp:
            assert resp.status == 200, (case, await resp.text())
            assert (await resp.json())["content"][0]["type"] == "text"


async def test_the_sdk_raises_its_own_exception_for_each_status(gateway_factory, cloud_sim):
    gateway = await gateway_factory(auth={"keys": ("gw-key-123",)})
    base = str(gateway.make_url(""))
    async with anthropic.AsyncAnthropic(base_url=base, api_key="wrong", max_retries=0) as bad:
        with pytest.raises(anthropic.AuthenticationError) as info:
            await bad.messages.create(**_OK)
        assert info.value.body["error"]["type"] == "authentication_error"
    # Claude Code sends ANTHROPIC_AUTH_TOKEN as a Bearer token, ANTHROPIC_API_KEY as x-api-key.
    async with anthropic.AsyncAnthropic(base_url=base, auth_token="gw-key-123", max_retries=0) as bearer:
        assert (await bearer.messages.create(**_OK)).content
    async with anthropic.AsyncAnthropic(base_url=base, api_key="gw-key-123", max_retries=0) as ok:
        assert (await ok.messages.create(**_OK)).content
        with pytest.raises(anthropic.NotFoundError) as info:
            await ok.messages.create(**{**_OK, "model": "gpt-4o"})
        assert "gpt-4o" in info.value.message
        with pytest.raises(anthropic.BadRequestError) as info:
            await ok.messages.create(**{**_OK, "max_tokens": -1})
        assert info.value.body["error"]["message"].startswith("max_tokens")
        # A cloud rate limit with nothing else to go to: Anthropic's 429, with retry-after.
        cloud_sim.default_fault = Fault.http_error(429, retry_after=30)
        with pytest.raises(anthropic.RateLimitError) as info:
            await ok.messages.create(**{**_OK, "model": "glm-4.7-cloud"})
        assert info.value.body["error"]["type"] == "rate_limit_error"
        assert int(info.value.response.headers["retry-after"]) >= 1


async def test_no_backend_at_all_is_overloaded_529(gateway_factory, local_sim, cloud_sim, http):
    gateway = await gateway_factory(routing={"max_attempts": 1})
    local_sim.default_fault = Fault.http_error(503)
    cloud_sim.default_fault = Fault.http_error(503)
    async with http.post(gateway.make_url("/v1/messages"), json=_OK, headers=HEADERS) as resp:
        body = await resp.json()
    # Every backend failed before answering: Anthropic's "overloaded", which Claude Code retries.
    assert (resp.status, body["type"], body["error"]["type"]) == (529, "error", "overloaded_error")


async def test_models_answer_in_the_shape_of_the_api_that_asks(gateway, http):
    async with anthropic.AsyncAnthropic(base_url=str(gateway.make_url("")), api_key="x", max_retries=0) as claude:
        models = [m async for m in claude.models.list()]
        assert {m.id for m in models} >= {"glm-4.7", "glm-4.7-local", "glm-4.7-cloud"}
        assert all(m.type == "model" and m.created_at for m in models)
        assert (await claude.models.retrieve("glm-4.7")).id == "glm-4.7"
        with pytest.raises(anthropic.NotFoundError):
            await claude.models.retrieve("claude-nonexistent")
    async with http.get(gateway.make_url("/v1/models")) as resp:  # no anthropic-version: OpenAI's shape
        assert (await resp.json())["object"] == "list"
    async with openai.AsyncOpenAI(base_url=str(gateway.make_url("/v1")), api_key="x", max_retries=0) as oai:
        assert (await oai.models.retrieve("glm-4.7-cloud")).model_extra == {"backend": "cloud", "pins": "tier"}
        with pytest.raises(openai.NotFoundError):
            await oai.models.retrieve("claude-nonexistent")
