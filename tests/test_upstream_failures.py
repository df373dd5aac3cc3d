"""Upstream failures: a real status before the first byte, an error event (and no [DONE]) after."""

from __future__ import annotations

import asyncio
import logging
import time

import openai
import pytest
from aiohttp import web

from backends import HTTPBackend, ManualClock
from backends.sim import Fault
from tests.conftest import read_sse, user


def body(model: str, stream: bool = True) -> dict:
    return {"model": model, "stream": stream, "messages": user()}


async def test_429_beyond_the_time_budget_reaches_client_with_retry_after(client, cloud_sim):
    cloud_sim.push_faults(Fault.http_error(429, retry_after=60))  # longer than max_total_s (30)
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(**body("glm-4.7-cloud"))
    response = info.value.response
    assert response.status_code == 429
    assert response.headers["retry-after"] == "60"
    assert response.headers["x-glm-backend"] == "cloud"
    assert "Requests per minute limit exceeded" in info.value.message
    assert len(cloud_sim.requests) == 1  # not retried: waiting would break the budget


async def test_429_without_retry_after_gets_the_cooldown_as_one(http, gateway_factory, cloud_sim):
    server = await gateway_factory(routing={"max_total_s": 0.1})
    cloud_sim.default_fault = Fault.http_error(429)
    async with http.post(server.make_url("/v1/chat/completions"), json=body("glm-4.7-cloud")) as resp:
        assert resp.status == 429
        # Cerebras sends no retry-after and its headers show no exhausted window: the client is
        # told the cooldown the gateway applies to that cloud (routing.cooldown_s).
        assert int(resp.headers["Retry-After"]) == 10
        error = (await resp.json())["error"]
    assert error["code"] == "request_quota_exceeded"


@pytest.mark.parametrize("status", [500, 503])
async def test_persistent_5xx_keeps_its_status_after_bounded_retries(http, gateway_factory, local_sim, status):
    server = await gateway_factory(routing={"backoff_base_s": 0.01})
    local_sim.default_fault = Fault.http_error(status)
    async with http.post(server.make_url("/v1/chat/completions"), json=body("glm-4.7-local")) as resp:
        assert resp.status == status
        error = (await resp.json())["error"]
    assert error["message"].startswith("local backend:")
    assert len(local_sim.requests) == 3  # routing.max_attempts


async def test_pinned_context_overflow_keeps_llama_wording_for_cline(http, gateway, local_sim, cloud_sim):
    local_sim.push_faults(Fault.context_overflow())
    async with http.post(gateway.make_url("/v1/chat/completions"), json=body("glm-4.7-local")) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    # Cline's context-window detection wants a 400 whose message mentions tokens.
    assert "tokens" in error["message"]
    assert error["type"] == "exceed_context_size_error"
    assert len(local_sim.requests) == 1 and not cloud_sim.requests  # pinned: never retried elsewhere


async def test_unreachable_backend_is_a_clean_error(http, gateway_factory):
    server = await gateway_factory(local={"base_url": "http://127.0.0.1:9/v1", "connect_timeout_s": 1.0},
                                   routing={"backoff_base_s": 0.01})
    async with http.post(server.make_url("/v1/chat/completions"), json=body("glm-4.7-local")) as resp:
        error = (await resp.json())["error"]
    # Refused by the socket (502), or already known to be down from the health probe (503).
    if resp.status == 503:
        assert "local: down" in error["message"]
    else:
        assert resp.status == 502 and "connection failed" in error["message"]


async def test_wrong_cloud_key_is_not_blamed_on_the_client(http, gateway_factory):
    server = await gateway_factory(cloud={"api_key": "wrong-key-wrong-key"}, routing={"backoff_base_s": 0.01})
    async with http.post(server.make_url("/v1/chat/completions"), json=body("glm-4.7-cloud")) as resp:
        assert resp.status == 502  # a 401 would tell Cline its own key is wrong
        text = await resp.text()
    assert "refused the gateway's request (HTTP 401)" in text
    assert "wrong-key-wrong-key" not in text


@pytest.mark.parametrize("fault", [Fault.error_event_after(5), Fault.cut_after(5), Fault.malformed_after(5)],
                         ids=lambda f: f.name)
@pytest.mark.parametrize("model", ["glm-4.7-local", "glm-4.7-cloud"])
async def test_failure_after_first_byte_ends_with_error_event_and_no_done(http, gateway, local_sim, cloud_sim,
                                                                         fault, model):
    (local_sim if model.endswith("local") else cloud_sim).push_faults(fault)
    async with http.post(gateway.make_url("/v1/chat/completions"), json=body(model)) as resp:
        assert resp.status == 200
        events, _ = await read_sse(resp)
    assert "[DONE]" not in events
    assert any(e.get("choices") and e["choices"][0]["delta"].get("content") for e in events[:-1])
    last = events[-1]
    assert set(last) == {"error"}
    assert last["error"]["message"]


async def test_openai_client_raises_on_truncated_stream(client, local_sim):
    local_sim.push_faults(Fault.cut_after(3))
    stream = await client.chat.completions.create(**body("glm-4.7-local"))
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass


async def test_slow_first_token_sends_keepalive_comments(http, gateway_factory, local_sim):
    server = await gateway_factory(server={"keepalive_s": 0.1})
    local_sim.push_faults(Fault.slow_first_token(0.5))
    async with http.post(server.make_url("/v1/chat/completions"), json=body("glm-4.7-local")) as resp:
        assert resp.status == 200
        events, comments = await read_sse(resp)
    assert len(comments) >= 2
    assert events[-1] == "[DONE]"
    content = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e.get("choices"))
    assert content == local_sim.script.content


async def test_failure_after_keepalive_commit_is_an_error_event(http, gateway_factory, local_sim):
    # Keep-alives commit the 200 while llama.cpp is silent; the read timeout that follows can
    # then only be reported in-stream, and must not look like a complete answer.
    server = await gateway_factory(server={"keepalive_s": 0.05}, local={"read_timeout_s": 0.2},
                                   routing={"backoff_base_s": 0.01})
    local_sim.default_fault = Fault.slow_first_token(5)
    async with http.post(server.make_url("/v1/chat/completions"), json=body("glm-4.7-local")) as resp:
        assert resp.status == 200
        events, comments = await read_sse(resp)
    assert comments
    assert "[DONE]" not in events
    assert events and set(events[-1]) == {"error"}
    assert "timed out" in events[-1]["error"]["message"]


@pytest.fixture
def gateway_errors():
    """ERROR records from the gateway's loggers (they do not propagate to pytest's caplog)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("gateway").addHandler(handler)
    yield records
    logging.getLogger("gateway").removeHandler(handler)


async def test_client_disconnect_cancels_upstream_within_100ms(http, gateway, local_sim, gateway_errors):
    local_sim.tokens_per_s = 50  # slow enough that the answer is far from done
    async with http.post(gateway.make_url("/v1/chat/completions"), json=body("glm-4.7-local")) as resp:
        assert resp.status == 200
        await resp.content.readuntil(b"\n\n")
        await resp.content.readuntil(b"\n\n")
        left = time.monotonic()
        resp.close()  # drop the connection mid-stream
    (record,) = await local_sim.wait_for_requests(1)
    assert record.outcome == "cancelled"
    assert record.ended - left < 0.1, f"upstream ran {record.ended - left:.3f}s after the client left"
    assert record.tokens_sent < len(local_sim.script.content.split())
    await asyncio.sleep(0.1)
    # A client leaving is routine: no traceback, no "unhandled error" (the next write to its
    # socket fails when the server does not cancel handlers, as aiohttp's test server does not).
    assert not gateway_errors, [r.getMessage() for r in gateway_errors]


async def test_client_disconnect_while_first_token_pending(http, gateway, local_sim):
    local_sim.push_faults(Fault.slow_first_token(30))
    task = asyncio.ensure_future(http.post(gateway.make_url("/v1/chat/completions"), json=body("glm-4.7-local")))
    await asyncio.sleep(0.3)  # the request is now waiting on the silent upstream
    assert not task.done()
    left = time.monotonic()
    task.cancel()
    (record,) = await local_sim.wait_for_requests(1)
    assert record.outcome == "cancelled"
    assert record.ended - left < 0.1


async def test_llama_closing_after_each_stream_does_not_fail_the_next_request(client, local_sim):
    # llama-server closes the socket after a streamed answer despite keep-alive (protocols §8);
    # back-to-back requests are where a pooled client trips over the dead socket.
    for stream in (True, True, False, True, False, False, True):
        result = await client.chat.completions.create(**body("glm-4.7-local", stream=stream))
        if stream:
            text = "".join([c.choices[0].delta.content or "" async for c in result if c.choices])
        else:
            text = result.choices[0].message.content
        assert text == local_sim.script.content
    assert [r.outcome for r in local_sim.requests] == ["completed"] * 7


@pytest.mark.parametrize("mode", ["close", "reset_on_reuse"])
async def test_dead_pooled_llama_socket_never_fails_a_request(http, aiohttp_server, cloud_sim, mode):
    """The deterministic form of the race: the socket a stream used is dead on reuse."""
    from backends.sim import LlamaCppSim
    from gateway.app import create_app
    from tests.conftest import LOCAL_SCRIPT, make_config

    sim = LlamaCppSim(LOCAL_SCRIPT, tokens_per_s=None, reset_on_reuse=(mode == "reset_on_reuse"))
    await sim.start()
    try:
        server = await aiohttp_server(create_app(make_config(sim.url, cloud_sim.url)))
        for stream in (True, False, True, True, False):
            async with http.post(server.make_url("/v1/chat/completions"),
                                 json=body("glm-4.7-local", stream=stream)) as resp:
                assert resp.status == 200, await resp.text()
                await resp.read()
    finally:
        await sim.stop()


async def test_cloud_streams_reuse_one_pooled_connection(client, cloud_sim):
    # A TLS handshake to the cloud costs tens of milliseconds: a stream that ended cleanly
    # hands its socket back to the pool, and the next request (streamed or not) reuses it,
    # even when the body's end trails the final chunk (Cerebras sends no [DONE]).
    cloud_sim.push_faults(None, Fault.no_done(seconds=0.2))
    for stream in (True, True, False, True):
        result = await client.chat.completions.create(**body("glm-4.7-cloud", stream=stream))
        if stream:
            assert "".join([c.choices[0].delta.content or "" async for c in result if c.choices])
        await asyncio.sleep(0.3)  # past the held-back end of the body
    await cloud_sim.wait_for_requests(4)
    peers = {r.peer for r in cloud_sim.requests}
    assert len(peers) == 1, peers


async def test_cloud_body_that_never_ends_is_closed_after_the_answer(http, gateway_factory, cloud_sim):
    # finish_reason and usage arrived, but the upstream holds the body open: the client gets
    # its complete answer at once, and the socket is closed after a grace, not pooled.
    clock = ManualClock()  # the grace is on the gateway's clock: the test moves it
    gateway = await gateway_factory(clock)
    cloud_sim.push_faults(Fault.no_done())
    for _ in range(2):
        started = time.monotonic()
        async with http.post(gateway.make_url("/v1/chat/completions"), json=body("glm-4.7-cloud")) as resp:
            events, _ = await read_sse(resp)
        assert events[-1] == "[DONE]" and time.monotonic() - started < 1.0
    await asyncio.sleep(0.1)
    assert len(cloud_sim.requests) == 1  # the held body is still open: within its grace
    clock.advance(HTTPBackend.end_of_body_grace_s)
    await cloud_sim.wait_for_requests(2, timeout=5)  # recorded as each ends
    second, first = cloud_sim.requests
    assert second.outcome == "completed" and first.fault == "no_done"
    assert first.outcome == "cancelled"  # the sim saw its socket close


async def test_client_gone_before_the_first_token_is_a_quiet_cancel(http, local_sim, cloud_sim,
                                                                   gateway_errors, tmp_path):
    # aiohttp's default server does not cancel a handler when its client leaves: the relay
    # then finds the socket gone when the first token arrives, and must treat it as a cancel.
    from gateway.app import create_app
    from tests.conftest import make_config

    app = create_app(make_config(local_sim.url, cloud_sim.url, ledger={"path": str(tmp_path / "l.db")}))
    runner = web.AppRunner(app, handler_cancellation=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        local_sim.push_faults(Fault.slow_first_token(0.3))
        task = asyncio.ensure_future(http.post(url + "/v1/chat/completions", json=body("glm-4.7-local")))
        await asyncio.sleep(0.1)
        task.cancel()  # gone while the upstream thinks
        await local_sim.wait_for_requests(1, timeout=5)
        await asyncio.sleep(0.1)
        async with http.get(url + "/stats") as resp:
            stats = await resp.json()
        assert stats["all_time"]["statuses"] == {"cancelled": 1}
        assert not gateway_errors, [r.getMessage() for r in gateway_errors]
    finally:
        await runner.cleanup()


def test_a_429_hint_comes_only_from_an_exhausted_window():
    from backends import Cerebras
    from config.schema import CLOUD_DEFAULT

    cerebras = Cerebras("cerebras", CLOUD_DEFAULT, session=None)  # type: ignore[arg-type]  (no I/O here)
    headers = {"x-ratelimit-remaining-tokens-minute": "59000", "x-ratelimit-reset-tokens-minute": "0.05",
               "x-ratelimit-remaining-requests-day": "0", "x-ratelimit-reset-requests-day": "3600.5"}
    assert cerebras.retry_after_hint(headers) == 3600.5
    headers["x-ratelimit-remaining-requests-day"] = "10"
    assert cerebras.retry_after_hint(headers) is None  # a 0.05 s refill says nothing about this 429
