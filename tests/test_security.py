"""Gateway keys, the refusal to bind openly, and the per-client limits."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from backends.sim import Fault
from tests.conftest import user
from tests.test_cli import env_with, free_port

KEY = "gw-key-5f1e0c9a7b"
OTHER = "gw-key-other-2b8d"


@pytest.fixture
async def keyed(gateway_factory):
    return await gateway_factory(auth={"keys": (KEY, "", OTHER)})


async def status_of(http, server, method: str, path: str, key: str | None = None, **kw) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with http.request(method, server.make_url(path), headers=headers, **kw) as resp:
        body = await resp.json() if resp.content_type == "application/json" else {}
        return resp.status, body | ({"_www": resp.headers.get("WWW-Authenticate")} if resp.status == 401 else {})


async def test_keys_guard_the_api_with_openai_shaped_401(keyed, http):
    chat = {"json": {"model": "glm-4.7", "messages": user()}}
    status, body = await status_of(http, keyed, "POST", "/v1/chat/completions", **chat)
    assert status == 401 and body["error"]["type"] == "authentication_error"
    assert body["error"]["code"] == "invalid_api_key" and body["_www"] == "Bearer"
    assert "missing gateway key" in body["error"]["message"]
    status, body = await status_of(http, keyed, "POST", "/v1/chat/completions", key="wrong", **chat)
    assert status == 401 and body["error"]["message"] == "invalid gateway key"
    for key in (KEY, OTHER):
        assert (await status_of(http, keyed, "POST", "/v1/chat/completions", key=key, **chat))[0] == 200
    for path in ("/v1/models", "/models", "/stats"):
        assert (await status_of(http, keyed, "GET", path))[0] == 401
        assert (await status_of(http, keyed, "GET", path, key=KEY))[0] == 200
    assert (await status_of(http, keyed, "GET", "/health"))[0] == 200  # open by default


async def test_openai_client_with_the_key(keyed):
    async with openai.AsyncOpenAI(base_url=str(keyed.make_url("/v1")), api_key=KEY, max_retries=0) as client:
        assert (await client.chat.completions.create(model="glm-4.7", messages=user())).choices
    async with openai.AsyncOpenAI(base_url=str(keyed.make_url("/v1")), api_key="nope", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(model="glm-4.7", messages=user())


async def test_health_and_metrics_can_be_closed(gateway_factory, http):
    server = await gateway_factory(auth={"keys": (KEY,), "protect_health": True, "protect_metrics": True})
    for path in ("/health", "/metrics"):
        assert (await status_of(http, server, "GET", path))[0] == 401
    async with http.get(server.make_url("/metrics"), headers={"Authorization": f"Bearer {KEY}"}) as resp:
        assert resp.status == 200 and "glm_gateway_requests" in await resp.text()


async def test_keys_are_never_logged_or_shown(keyed, http, caplog):
    caplog.set_level(logging.DEBUG)
    await status_of(http, keyed, "POST", "/v1/chat/completions", key=KEY, json={"model": "glm-4.7", "messages": user()})
    await status_of(http, keyed, "POST", "/v1/chat/completions", key=OTHER + "x", json={"model": "glm-4.7"})
    texts = [caplog.text]
    for path in ("/health", "/stats"):
        async with http.get(keyed.make_url(path), headers={"Authorization": f"Bearer {KEY}"}) as resp:
            texts.append(await resp.text())
    for text in texts:
        assert KEY not in text and OTHER not in text


def test_binding_beyond_loopback_without_keys_is_refused(tmp_path: Path):
    config = tmp_path / "gw.yaml"
    config.write_text(f"listen: {{host: 0.0.0.0, port: {free_port()}}}\nlogging: {{file: ''}}\n")
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)],
                         capture_output=True, text=True, env=env_with(), timeout=30)
    assert out.returncode == 2
    assert "listen.allow_open_bind" in out.stderr and "auth.keys" in out.stderr and "Traceback" not in out.stderr
    # The command-line override meets the same rule.
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--host", "0.0.0.0", "--port",
                          str(free_port())], capture_output=True, text=True, env=env_with(), timeout=30)
    assert out.returncode == 2 and "listen.allow_open_bind" in out.stderr


async def test_message_count_and_prompt_size_limits(gateway_factory, http):
    server = await gateway_factory(limits={"max_messages": 3, "max_prompt_chars": 1000})
    many = [{"role": "user", "content": "hi"}] * 4
    status, body = await status_of(http, server, "POST", "/v1/chat/completions", json={"messages": many})
    assert status == 400 and body["error"]["code"] == "too_many_messages"
    status, body = await status_of(http, server, "POST", "/v1/chat/completions", json={"messages": user("x" * 1001)})
    assert status == 413 and body["error"]["code"] == "prompt_too_large"
    ok = {"model": "glm-4.7", "messages": user()}
    assert (await status_of(http, server, "POST", "/v1/chat/completions", json=ok))[0] == 200


async def test_request_rate_per_client(gateway_factory, http):
    server = await gateway_factory(limits={"requests_per_minute_per_key": 3}, auth={"keys": (KEY, OTHER)})
    chat = {"json": {"model": "glm-4.7", "messages": user()}}
    assert [(await status_of(http, server, "POST", "/v1/chat/completions", key=KEY, **chat))[0]
            for _ in range(3)] == [200, 200, 200]
    async with http.post(server.make_url("/v1/chat/completions"), headers={"Authorization": f"Bearer {KEY}"},
                         **chat) as resp:
        assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
        assert (await resp.json())["error"]["code"] == "client_rate_limited"
    # Another key has its own budget.
    assert (await status_of(http, server, "POST", "/v1/chat/completions", key=OTHER, **chat))[0] == 200


async def test_concurrent_stream_caps(gateway_factory, http, local_sim):
    third = "gw-key-third-77aa"
    server = await gateway_factory(limits={"max_streams_per_key": 1, "max_streams": 2},
                                   auth={"keys": (KEY, OTHER, third)})
    local_sim.default_fault = Fault.slow_first_token(1.0)
    body = {"model": "glm-4.7", "stream": True, "messages": user()}

    async def stream(key: str) -> int:
        async with http.post(server.make_url("/v1/chat/completions"), json=body,
                             headers={"Authorization": f"Bearer {key}"}) as resp:
            await resp.read()
            return resp.status

    first = asyncio.ensure_future(stream(KEY))
    await asyncio.sleep(0.2)
    assert await stream(KEY) == 429  # this key already has its one stream open
    other = asyncio.ensure_future(stream(OTHER))
    await asyncio.sleep(0.2)
    assert await stream(third) == 429  # two streams open: the gateway-wide cap
    local_sim.default_fault = None
    async with http.post(server.make_url("/v1/chat/completions"), json={**body, "messages": user("third")}) as resp:
        assert resp.status == 401  # no key: refused before any limit
    assert await first == 200 and await other == 200
    assert await stream(KEY) == 200  # the slot was given back
    async with http.get(server.make_url("/stats"), headers={"Authorization": f"Bearer {KEY}"}) as resp:
        stats = (await resp.json())["since_start"]
    assert stats["errors"] == {"TooMany": 2} and stats["statuses"] == {"error": 2, "ok": 3}
