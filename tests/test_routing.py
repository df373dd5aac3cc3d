"""Routing end to end: the openai client, the gateway, and both simulators on loopback."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest

from backends import ManualClock
from backends.sim import Fault
from tests.conftest import user

EASY = "Fix the typo in the readme"
HARD = "Refactor the architecture of the scheduler and debug the race condition in the worker pool"


async def ask(client: openai.AsyncOpenAI, text: str = EASY, model: str = "glm-4.7", stream: bool = True,
              messages: list | None = None, **extra):
    """One request; returns (backend, route reason, answer text)."""
    raw = await client.chat.completions.with_raw_response.create(
        model=model, messages=messages or user(text), stream=stream, **extra)
    result = raw.parse()
    if stream:
        text_out = "".join([c.choices[0].delta.content or "" async for c in result if c.choices])
    else:
        text_out = result.choices[0].message.content
    return raw.headers["x-glm-backend"], raw.headers["x-glm-route-reason"], text_out


async def test_easy_tasks_go_local_and_hard_ones_to_the_cloud(client, local_sim, cloud_sim):
    assert await ask(client, EASY) == ("local", "simple", local_sim.script.content)
    assert await ask(client, HARD) == ("cloud", "complex", cloud_sim.script.content)


async def test_route_header_overrides_the_model_id(client):
    assert (await ask(client, HARD, extra_headers={"x-glm-route": "local"}))[:2] == ("local", "pinned")
    assert (await ask(client, EASY, extra_headers={"x-glm-route": "cloud"}))[:2] == ("cloud", "pinned")
    assert (await ask(client, "typo " + EASY, model="glm-4.7-cloud",
                      extra_headers={"x-glm-route": "auto"}))[:2] == ("local", "simple")
    with pytest.raises(openai.BadRequestError):
        await ask(client, extra_headers={"x-glm-route": "mars"})


async def test_429_retry_after_is_honoured_then_served(gateway_factory, cloud_sim):
    # The gateway's clock is a manual one: its waits are recorded, and take no real time.
    clock = ManualClock()
    gateway = await gateway_factory(clock)
    cloud_sim.push_faults(Fault.http_error(429, retry_after=1))
    async with openai.AsyncOpenAI(base_url=str(gateway.make_url("/v1")), api_key="x", max_retries=0) as client:
        assert await ask(client, model="glm-4.7-cloud") == ("cloud", "pinned", cloud_sim.script.content)
    assert [r.fault for r in cloud_sim.requests] == ["http_error", None]
    assert clock.slept == [1.0]  # the retry waited exactly what Retry-After asked, then went again


async def test_a_short_cooldown_is_waited_out_not_bounced(gateway_factory, http, cloud_sim):
    # A 429 cools the cloud down for 1 s. A request that arrives 0.3 s later, with nothing else
    # to go to, waits out the rest of it and is served, instead of collecting a 429 of its own.
    clock = ManualClock()
    gateway = await gateway_factory(clock, routing={"max_attempts": 1})
    cloud_sim.push_faults(Fault.http_error(429, retry_after=1))
    url = gateway.make_url("/v1/chat/completions")
    async with http.post(url, json={"model": "glm-4.7-cloud", "messages": user("first")}) as resp:
        assert resp.status == 429  # one attempt allowed: it is the client's to retry
    clock.advance(0.3)
    async with http.post(url, json={"model": "glm-4.7-cloud", "messages": user("second")}) as resp:
        assert resp.status == 200, await resp.text()
    assert clock.slept == [pytest.approx(0.71)]  # the rest of the cooldown (and a hair), not a full second
    assert [r.fault for r in cloud_sim.requests] == ["http_error", None]


async def test_persistent_429_is_bounded_without_hammering(gateway_factory, cloud_sim):
    clock = ManualClock()
    gateway = await gateway_factory(clock)
    cloud_sim.default_fault = Fault.http_error(429, retry_after=0.3)
    async with openai.AsyncOpenAI(base_url=str(gateway.make_url("/v1")), api_key="x", max_retries=0) as client:
        with pytest.raises(openai.RateLimitError) as info:
            await ask(client, model="glm-4.7-cloud")
    assert info.value.response.headers["retry-after"] == "1"
    assert len(cloud_sim.requests) == 3  # routing.max_attempts
    assert len(clock.slept) == 2 and all(s >= 0.3 for s in clock.slept)  # never sooner than Retry-After


async def test_500_once_then_served(client, local_sim):
    local_sim.push_faults(Fault.http_error(500))
    assert await ask(client, model="glm-4.7-local") == ("local", "pinned", local_sim.script.content)
    assert [r.outcome for r in local_sim.requests] == ["fault", "completed"]


async def test_persistent_503_falls_back_to_the_cloud(client, local_sim, cloud_sim):
    local_sim.default_fault = Fault.http_error(503)
    assert await ask(client, EASY) == ("cloud", "fallback", cloud_sim.script.content)
    assert len(local_sim.requests) == 1


async def test_reset_before_headers_then_served(client, cloud_sim):
    cloud_sim.push_faults(Fault.reset_before_headers())
    assert await ask(client, model="glm-4.7-cloud", stream=False) == ("cloud", "pinned", cloud_sim.script.content)
    assert len(cloud_sim.requests) == 2


async def test_silent_upstream_times_out_and_falls_back_within_budget(gateway_factory, local_sim, cloud_sim):
    server = await gateway_factory(local={"headers_timeout_s": 0.5})
    local_sim.default_fault = Fault.slow_first_token(30)
    async with openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="x", max_retries=0) as client:
        started = time.monotonic()
        result = await ask(client, EASY)
        took = time.monotonic() - started
    assert result == ("cloud", "fallback", cloud_sim.script.content)
    assert 0.5 <= took < 1.5
    (local,) = await local_sim.wait_for_requests(1)
    assert local.outcome == "cancelled"  # the silent request was abandoned, not left running


async def test_context_overflow_is_served_by_the_cloud_and_never_retried_locally(client, local_sim, cloud_sim):
    local_sim.default_fault = Fault.context_overflow()
    assert await ask(client, EASY) == ("cloud", "fallback", cloud_sim.script.content)
    assert len(local_sim.requests) == 1


async def test_too_big_for_the_local_window_goes_straight_to_the_cloud(gateway_factory, local_sim, cloud_sim):
    server = await gateway_factory(local={"context_window": 2048}, routing={"output_reserve_tokens": 1024})
    async with openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="x", max_retries=0) as client:
        assert (await ask(client, EASY + " " + "word " * 3000))[:2] == ("cloud", "context")
        assert (await ask(client, EASY + " short"))[:2] == ("local", "simple")
    assert len(local_sim.requests) == 1


async def test_context_window_is_learned_from_llama_props(gateway_factory, local_sim, http):
    server = await gateway_factory()  # config says 65536; the simulator's slot holds 8192
    for _ in range(50):
        async with http.get(server.make_url("/health")) as resp:
            if (await resp.json())["backends"]["local"]["context_window"] == local_sim.n_ctx:
                break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the /props context window was never picked up")
    async with openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="x", max_retries=0) as client:
        assert (await ask(client, EASY + " word" * 8000))[:2] == ("cloud", "context")
    assert not local_sim.requests


async def test_content_rejection_is_propagated_not_retried(client, local_sim, cloud_sim):
    with pytest.raises(openai.BadRequestError) as info:
        await ask(client, HARD, response_format={"type": "json_object"},
                  tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    assert info.value.status_code == 400
    assert len(cloud_sim.requests) == 1 and not local_sim.requests


async def test_flapping_local_is_served_around_and_returned_to(gateway_factory, local_sim, cloud_sim):
    server = await gateway_factory(routing={"breaker_failures": 2, "breaker_open_s": 1.0, "sticky": False})
    async with openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="x", max_retries=0) as client:
        local_sim.default_fault = Fault.http_error(503)
        served = [await ask(client, f"{EASY} #{i}") for i in range(6)]
        assert all(backend == "cloud" for backend, _, _ in served)
        # The open circuit keeps requests away: only the failures that opened it, plus at most one
        # half-open trial per open period, reached the broken backend.
        assert len(local_sim.requests) <= 4
        local_sim.default_fault = None
        recovered = time.monotonic()
        while (await ask(client, EASY))[0] != "local":
            assert time.monotonic() - recovered < 30, "local was not used again within 30 s"
            await asyncio.sleep(0.1)


async def test_conversation_stays_sticky_until_a_hard_rule_moves_it(gateway_factory, local_sim, cloud_sim):
    server = await gateway_factory(local={"context_window": 4096}, routing={"output_reserve_tokens": 512})
    async with openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="x", max_retries=0) as client:
        messages = [{"role": "system", "content": "You are Cline."},
                    {"role": "user", "content": f"<task>\n{EASY}\n</task>"}]
        assert (await ask(client, messages=messages))[:2] == ("local", "simple")
        messages += [{"role": "assistant", "content": local_sim.script.content},
                     {"role": "user", "content": f"<feedback>{HARD}</feedback>"}]
        assert (await ask(client, messages=messages))[:2] == ("local", "sticky")  # complex, but sticky
        messages += [{"role": "assistant", "content": "ok"},
                     {"role": "user", "content": "[read_file for 'big.py'] Result:\n" + "x = 1\n" * 4000}]
        assert (await ask(client, messages=messages))[:2] == ("cloud", "context")  # no longer fits
        messages += [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "<feedback>thanks</feedback>"}]
        messages[-3]["content"] = "[read_file for 'big.py'] Result:\nx = 1\n"  # fits again...
        assert (await ask(client, messages=messages))[:2] == ("cloud", "sticky")  # ...but stays put


async def test_nothing_can_serve_is_a_503_that_says_why(gateway_factory, http):
    server = await gateway_factory(local={"base_url": "http://127.0.0.1:9/v1"}, cloud={"enabled": False})
    for _ in range(50):
        async with http.post(server.make_url("/v1/chat/completions"),
                             json={"model": "glm-4.7", "messages": user()}) as resp:
            if resp.status == 503:
                error = (await resp.json())["error"]
                break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("never saw the 503")
    assert error["message"] == "no backend can serve this request: local: down"
    assert error["code"] == "no_backend_available"


async def test_cooling_cloud_and_down_local_is_a_429_with_retry_after(gateway_factory, http, cloud_sim):
    server = await gateway_factory(local={"base_url": "http://127.0.0.1:9/v1"})
    cloud_sim.push_faults(Fault.http_error(429, retry_after=40))
    body = {"model": "glm-4.7-cloud", "messages": user()}
    async with http.post(server.make_url("/v1/chat/completions"), json=body) as resp:
        assert resp.status == 429
    for _ in range(50):
        async with http.post(server.make_url("/v1/chat/completions"), json={**body, "model": "glm-4.7"}) as resp:
            if "local: down" in await resp.text():
                break
        await asyncio.sleep(0.05)
    assert resp.status == 429
    assert 38 <= int(resp.headers["Retry-After"]) <= 40
    assert len(cloud_sim.requests) == 1  # the cooldown kept every later request away


async def test_health_shows_breaker_cooldown_and_rate_limits(gateway, http, client, cloud_sim):
    cloud_sim.push_faults(Fault.http_error(429, retry_after=45))
    with pytest.raises(openai.RateLimitError):
        await ask(client, model="glm-4.7-cloud")
    async with http.get(gateway.make_url("/health")) as resp:
        health = await resp.json()
    cloud = health["backends"]["cloud"]
    assert cloud["breaker"] == "closed" and cloud["recent_failures"] == 1
    assert 40 < cloud["cooldown_s"] <= 45
    assert cloud["rate_limits"]["tokens-minute"]["limit"] == cloud_sim.bucket.capacity
    assert health["token_counter"] == "tiktoken:cl100k_base"
    assert health["strategy"] == "complexity"


async def test_cloud_is_left_before_its_rate_limit_runs_out(aiohttp_server, local_sim, token_counter):
    from backends.sim import CerebrasSim
    from gateway.app import create_app
    from tests.conftest import CLOUD_KEY, CLOUD_SCRIPT, make_config

    # A bucket with room for about one request of 16k reserved output tokens per minute.
    cloud = CerebrasSim(CLOUD_SCRIPT, tokens_per_s=None, api_key=CLOUD_KEY, rate_limit_tokens_per_minute=20_000)
    await cloud.start()
    try:
        server = await aiohttp_server(create_app(make_config(local_sim.url, cloud.url), token_counter=token_counter))
        async with openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="x", max_retries=0) as client:
            assert (await ask(client, HARD + " #1"))[:2] == ("cloud", "complex")
            # Cerebras said (x-ratelimit-remaining-tokens-minute) that another 16k reservation
            # would not fit: the router goes local instead of collecting a 429.
            assert (await ask(client, HARD + " #2"))[:2] == ("local", "unavailable")
        assert [r.outcome for r in cloud.requests] == ["completed"]
    finally:
        await cloud.stop()


async def test_images_are_dropped_for_a_backend_without_image_support(client, local_sim):
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "What does this screenshot show?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]
    assert (await ask(client, messages=messages, model="glm-4.7-local"))[0] == "local"
    assert local_sim.requests[-1].body["messages"][0]["content"] == [
        {"type": "text", "text": "What does this screenshot show?"}]
