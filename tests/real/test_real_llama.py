"""End to end against a real llama-server (Gemma 3 270M), with the Cerebras simulator as the cloud.

Opt-in (builds llama.cpp, ~6 minutes the first time):

    pytest -m real_llama tests/real -s
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backends.sim import CerebrasSim, Script
from gateway.app import create_app
from tests.conftest import CLOUD_KEY, make_config, read_sse
from tests.real.setup_llama import llama_server, model
from tests.test_cli import free_port

pytestmark = pytest.mark.real_llama
N_CTX = 2048
CLOUD_ANSWER = "and that is where the cloud picked up the answer."


@pytest.fixture(scope="module")
def llama_binary() -> tuple[Path, Path, Path]:
    return (llama_server(), *model())


async def start_llama(http, binary: Path, gguf: Path, template: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """llama-server on a free loopback port, once its /health answers 200."""
    port = free_port()
    proc = subprocess.Popen([str(binary), "-m", str(gguf), "--chat-template-file", str(template),
                             "--host", "127.0.0.1", "--port", str(port), "--alias", "local", "-t", "1", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, "llama-server exited"
        try:
            async with http.get(url + "/health") as resp:
                if resp.status == 200:
                    return proc, url
        except OSError:
            pass
        assert time.monotonic() < deadline, "llama-server never became healthy"
        await asyncio.sleep(0.2)


@pytest.fixture
async def llama(llama_binary, http):
    proc, url = await start_llama(http, *llama_binary, "-c", str(N_CTX), "-np", "1", "--metrics")
    yield proc, url
    os.kill(proc.pid, signal.SIGCONT)
    proc.terminate()
    await asyncio.to_thread(proc.wait, 10)


@pytest.fixture
async def stack(llama, aiohttp_server, token_counter, tmp_path):
    proc, llama_url = llama
    cloud = CerebrasSim(Script(content=CLOUD_ANSWER), tokens_per_s=200, api_key=CLOUD_KEY)
    await cloud.start()
    watch = {"first_token_timeout_s": 20.0, "stall_timeout_s": 1.5}
    cfg = make_config(llama_url + "/v1", cloud.url, local=watch, cloud=watch,
                      ledger={"path": str(tmp_path / "ledger.sqlite3")})
    server = await aiohttp_server(create_app(cfg, token_counter=token_counter))
    yield proc, llama_url, cloud, server
    await cloud.stop()


async def test_real_llama_end_to_end(stack, http, tmp_path):
    proc, llama_url, cloud, server = stack
    chat = server.make_url("/v1/chat/completions")
    body = {"model": "glm-4.7", "stream": True, "max_tokens": 40, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Say hello and count to five."}]}

    # 1. Real streamed answers with usage and timings; back-to-back, so the pool meets the
    #    sockets llama-server closes after every stream.
    for i in range(3):
        async with http.post(chat, json={**body, "messages": [{"role": "user", "content": f"Count to {i + 3}."}]}) \
                as resp:
            assert resp.status == 200 and resp.headers["x-glm-backend"] == "local"
            events, _ = await read_sse(resp)
        assert events[-1] == "[DONE]"
        usage_chunk = events[-2]
        assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] > 0
        assert usage_chunk["timings"]["predicted_n"] == usage_chunk["usage"]["completion_tokens"]
        answer = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-2] if e.get("choices"))
        speed = usage_chunk["timings"]["predicted_per_second"]
        print(f"\nreal answer {i}: {answer!r} usage={usage_chunk['usage']} predicted_per_second={speed:.1f}")

    # 2. A real stall: freeze llama-server mid-stream; the cloud continues the answer.
    long = {**body, "max_tokens": 400,
            "messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]}
    async with http.post(chat, json=long) as resp:
        assert resp.status == 200
        seen, frozen_at = [], None
        buf = b""
        async for piece in resp.content.iter_any():
            buf += piece
            while b"\n\n" in buf:
                block, buf = buf.split(b"\n\n", 1)
                if not block.startswith(b"data: "):
                    continue
                seen.append("[DONE]" if block == b"data: [DONE]" else orjson.loads(block[6:]))
                deltas = [e for e in seen if isinstance(e, dict) and e.get("choices")
                          and e["choices"][0]["delta"].get("content")]
                if frozen_at is None and len(deltas) >= 10:
                    os.kill(proc.pid, signal.SIGSTOP)
                    frozen_at = time.monotonic()
    os.kill(proc.pid, signal.SIGCONT)
    assert seen[-1] == "[DONE]" and not any(isinstance(e, dict) and "error" in e for e in seen)
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in seen[:-1]
                   if isinstance(e, dict) and e.get("choices"))
    assert text.endswith(CLOUD_ANSWER)
    assert [e for e in seen if isinstance(e, dict) and e.get("model_used")][-1]["model_used"] == "local+cloud"
    continuation = cloud.requests[-1].body["messages"]
    assert continuation[-2]["role"] == "assistant" and text.startswith(continuation[-2]["content"])
    print(f"\nstall: froze llama-server after 10 deltas; client text: {text!r}")

    # 3. A real context overflow: pinned to local it is llama.cpp's own 400 (Cline truncates on
    #    it); routed, the gateway knows llama's n_ctx from /props and sends it to the cloud.
    huge = [{"role": "user", "content": "Fix the typo in this text: " + "lighthouse " * 3000}]
    async with http.post(chat, json={"model": "glm-4.7-local", "messages": huge}) as resp:
        error = await resp.json()
        assert resp.status == 400 and error["error"]["type"] == "exceed_context_size_error"
        print(f"\npinned overflow: {error['error']['message']}")
    async with http.post(chat, json={"model": "glm-4.7", "messages": huge}) as resp:
        assert resp.status == 200 and resp.headers["x-glm-backend"] == "cloud"
        assert resp.headers["x-glm-route-reason"] == "context"

    # 4. /stats and /metrics for those requests, and a real Prometheus scraping both.
    async with http.get(server.make_url("/stats")) as resp:
        stats = (await resp.json())["since_start"]
    print(f"\n/stats since start: {orjson.dumps(stats).decode()}")
    assert stats["requests"] == 6
    assert stats["requests_by_backend"] == {"local": 3, "local+cloud": 1, "cloud": 1}
    assert stats["failovers"] == [{"reason": "stall", "phase": "mid_content", "count": 1}]
    assert stats["backends"]["local"]["tokens"]["completion"] > 0 and stats["savings_usd"] > 0
    async with http.get(server.make_url("/metrics")) as resp:
        families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
    assert sum(s.value for s in families["glm_gateway_failovers"].samples if s.name.endswith("_total")) == 1
    if shutil.which("prometheus"):
        await scrape_with_prometheus(http, server.port, llama_url, tmp_path)


async def scrape_with_prometheus(http, gateway_port: int, llama_url: str, tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "prom.yml").write_text(f"""
global: {{scrape_interval: 1s}}
scrape_configs:
  - job_name: gateway
    static_configs: [{{targets: ["127.0.0.1:{gateway_port}"]}}]
  - job_name: llama
    static_configs: [{{targets: ["{llama_url.removeprefix('http://')}"]}}]
""")
    proc = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prom.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'prom'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        found: dict[str, float] = {}
        deadline = time.monotonic() + 30
        while len(found) < 2 and time.monotonic() < deadline:
            for expr in ("sum(glm_gateway_requests_total)", "llamacpp:tokens_predicted_total"):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": expr}) as resp:
                        result = (await resp.json())["data"]["result"] if resp.status == 200 else []
                except OSError:
                    result = []
                if result:
                    found[expr] = float(result[0]["value"][1])
            await asyncio.sleep(0.5)
        print(f"\nPrometheus scraped: {found}")
        assert found.get("sum(glm_gateway_requests_total)") == 6 and found.get("llamacpp:tokens_predicted_total", 0) > 0
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 10)


@pytest.fixture
async def slow_llama(llama_binary, http):
    """One thread and small batches: prefill at a few hundred tokens/s, progress every 256 tokens."""
    proc, url = await start_llama(http, *llama_binary, "-c", "8192", "-np", "1", "-b", "256", "-ub", "256")
    yield url
    proc.terminate()
    await asyncio.to_thread(proc.wait, 10)


async def test_real_llama_prefill_eta_switches_to_the_cloud_at_once(slow_llama, aiohttp_server, token_counter, http,
                                                                     tmp_path):
    """#14: the real server's prompt_progress gives an ETA; past first_token_timeout_s the request
    goes to the cloud after the first batches instead of after the whole timeout, while a prompt
    whose prefill fits is left to finish locally."""
    cloud = CerebrasSim(Script(content=CLOUD_ANSWER), tokens_per_s=200, api_key=CLOUD_KEY)
    await cloud.start()
    try:
        watch = {"first_token_timeout_s": 12.0, "stall_timeout_s": 5.0}
        cfg = make_config(slow_llama + "/v1", cloud.url, local=watch, cloud=watch,
                          routing={"max_local_ttft_s": 0.0},  # judge by progress alone here
                          ledger={"path": str(tmp_path / "ledger.sqlite3")})
        server = await aiohttp_server(create_app(cfg, token_counter=token_counter))
        words = "the quick brown fox jumps over the lazy dog near the river bank today "

        async def ask(repeat: int) -> tuple[float, dict, list]:
            body = {"model": "glm-4.7", "stream": True, "max_tokens": 8,
                    "messages": [{"role": "user", "content": "Fix the typo in README.md. " + words * repeat}]}
            started = time.monotonic()
            async with http.post(server.make_url("/v1/chat/completions"), json=body) as resp:
                assert resp.status == 200, await resp.text()
                events, _ = await read_sse(resp)
                return time.monotonic() - started, dict(resp.headers), events

        short_s, short_headers, short_events = await ask(40)   # ~600 tokens: fits the budget
        assert short_headers["x-glm-backend"] == "local", short_headers
        assert not any("prompt_progress" in e for e in short_events if isinstance(e, dict))
        long_s, long_headers, long_events = await ask(400)     # ~6,000 tokens: half a minute of prefill
        print(f"short prompt served locally in {short_s:.1f}s; long prompt switched after {long_s:.1f}s")
        assert long_headers["x-glm-backend"] == "cloud" and long_headers["x-glm-route-reason"] == "slow_local"
        assert long_s < 8.0  # the first-token timeout is 12 s: it did not wait it out
        assert long_events[-1] == "[DONE]"
    finally:
        await cloud.stop()


async def test_real_llama_through_the_anthropic_front(stack):
    """#15: the anthropic SDK against the real server: a streamed and a whole message, and a
    prefill, which the real llama-server echoes in its first streamed delta (protocols.md §8)
    and returns whole when not streaming; the client gets the continuation only, as from Claude."""
    import anthropic

    _, _, _, server = stack
    async with anthropic.AsyncAnthropic(base_url=str(server.make_url("")), api_key="x", max_retries=0) as claude:
        ask = dict(model="claude-haiku-4-5", max_tokens=24, messages=[{"role": "user", "content": "Say hello."}])
        async with claude.messages.stream(**ask) as stream:
            streamed = await stream.get_final_message()
            assert stream.response.headers["x-glm-backend"] == "local"  # 24 tokens fit its 2,048
        whole = await claude.messages.create(**ask)
        for message in (streamed, whole):
            assert message.content[0].type == "text" and message.content[0].text
            assert message.stop_reason in ("end_turn", "max_tokens") and message.usage.output_tokens > 0
        prefill = "1, 2, 3,"
        ask = dict(model="glm-4.7-local", max_tokens=12, messages=[
            {"role": "user", "content": "Count from 1 to 10, separated by commas."},
            {"role": "assistant", "content": prefill}])
        async with claude.messages.stream(**ask) as stream:
            streamed_text = await stream.get_final_text()
        whole_text = (await claude.messages.create(**ask)).content[0].text
    print(f"\nanthropic front on real llama: {streamed.content[0].text!r}; after the prefill {prefill!r}: "
          f"streamed {streamed_text!r}, whole {whole_text!r}")
    assert not streamed_text.startswith(prefill) and not whole_text.startswith(prefill)
