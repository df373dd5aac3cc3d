"""/v1/models, /health, pinning by model id, headers, and keeping secrets out of sight."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.conftest import CLOUD_KEY, user


@pytest.mark.parametrize("path", ["/v1/models", "/models"])
async def test_models_lists_routed_and_pinned_ids(http, gateway, path):
    async with http.get(gateway.make_url(path)) as resp:
        assert resp.status == 200
        data = await resp.json()
    assert data["object"] == "list"
    assert {m["id"]: (m["backend"], m["pins"]) for m in data["data"]} == {
        "glm-4.7": ("auto", None), "glm-4.7-local": ("local", "tier"), "glm-4.7-cloud": ("cloud", "tier"),
        "glm-4.7@local": ("local", "backend"), "glm-4.7@cloud": ("cloud", "backend")}


async def test_openai_client_lists_models(client):
    ids = [m.id async for m in client.models.list()]
    assert "glm-4.7" in ids


async def test_disabled_backend_is_not_offered(http, gateway_factory):
    server = await gateway_factory(cloud={"enabled": False})
    async with http.get(server.make_url("/v1/models")) as resp:
        ids = [m["id"] for m in (await resp.json())["data"]]
    assert ids == ["glm-4.7", "glm-4.7-local", "glm-4.7@local"]
    async with http.post(server.make_url("/v1/chat/completions"),
                         json={"model": "glm-4.7-cloud", "messages": user()}) as resp:
        assert resp.status == 404


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/chat/completions"])
async def test_both_chat_paths_serve(http, gateway, path):
    async with http.post(gateway.make_url(path), json={"model": "glm-4.7", "messages": user()}) as resp:
        assert resp.status == 200
        assert resp.headers["x-glm-backend"] == "local"
        assert resp.headers["x-request-id"]


async def test_model_id_pins_the_backend(client, local_sim, cloud_sim):
    for model, backend in (("glm-4.7-cloud", "cloud"), ("glm-4.7-local", "local"), ("glm-4.7", "local")):
        raw = await client.chat.completions.with_raw_response.create(model=model, messages=user(f"hello {model}"))
        assert raw.headers["x-glm-backend"] == backend
        assert raw.headers["x-glm-route-reason"] == ("simple" if model == "glm-4.7" else "pinned")
    assert len(cloud_sim.requests) == 1 and len(local_sim.requests) == 2
    # The upstream gets its own model id from config, not the client's.
    assert cloud_sim.requests[0].body["model"] == "zai-glm-4.7"


async def test_health_reports_backend_states(http, gateway, local_sim):
    async def state(name: str) -> str:
        async with http.get(gateway.make_url("/health")) as resp:
            assert resp.status == 200
            return (await resp.json())["backends"][name]["state"]

    async def until(name: str, wanted: str) -> None:
        for _ in range(50):
            if await state(name) == wanted:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{name} never became {wanted}")

    await until("local", "ok")
    await until("cloud", "ok")
    local_sim.loading = True
    await until("local", "loading")
    local_sim.loading = False
    await until("local", "ok")


async def test_secrets_never_reach_health_logs_or_errors(http, gateway, cloud_sim, caplog):
    caplog.set_level(logging.DEBUG)
    async with http.post(gateway.make_url("/v1/chat/completions"),
                         json={"model": "glm-4.7-cloud", "stream": True, "messages": user()}) as resp:
        await resp.read()
    async with http.get(gateway.make_url("/health")) as resp:
        health = await resp.text()
    assert CLOUD_KEY not in health
    assert CLOUD_KEY not in caplog.text
    # The cloud did receive it, so the test would notice a gateway that drops it.
    assert cloud_sim.requests[-1].headers["Authorization"] == f"Bearer {CLOUD_KEY}"


async def test_message_bodies_are_not_logged_by_default(http, gateway, caplog):
    caplog.set_level(logging.DEBUG)
    secret_code = "def very_private_function(): pass"
    async with http.post(gateway.make_url("/v1/chat/completions"),
                         json={"model": "glm-4.7", "messages": user(secret_code)}) as resp:
        assert resp.status == 200
    assert "request " in caplog.text  # the per-request line is there...
    assert secret_code not in caplog.text  # ...without the body


async def test_cerebras_gets_a_sanitised_request(client, cloud_sim):
    """llama.cpp extras and reasoning_content on history would be a 400 from Cerebras."""
    messages = [
        {"role": "system", "content": "You are Cline."},
        {"role": "user", "content": [{"type": "text", "text": "<task>fix it</task>"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"role": "assistant", "content": "Looking.", "reasoning_content": "hmm", "reasoning_details": []},
        {"role": "user", "content": "go on"},
    ]
    result = await client.chat.completions.create(
        model="glm-4.7-cloud", messages=messages, max_tokens=50_000,
        extra_body={"top_k": 40, "min_p": 0.05, "cache_prompt": True, "store": False,
                    "chat_template_kwargs": {"enable_thinking": False}})
    assert result.choices[0].message.content == cloud_sim.script.content
    sent = cloud_sim.requests[-1].body
    assert "max_tokens" not in sent and sent["max_completion_tokens"] == 16000  # capped by config
    for key in ("top_k", "min_p", "cache_prompt", "store", "chat_template_kwargs"):
        assert key not in sent
    assert sent["messages"][2] == {"role": "assistant", "content": "Looking.", "reasoning": "hmm"}
    assert sent["messages"][1]["content"] == [{"type": "text", "text": "<task>fix it</task>"}]


async def test_llama_gets_extras_passed_through(client, local_sim):
    await client.chat.completions.create(model="glm-4.7-local", messages=user(),
                                         extra_body={"top_k": 40, "cache_prompt": True})
    sent = local_sim.requests[-1].body
    assert sent["top_k"] == 40 and sent["cache_prompt"] is True
