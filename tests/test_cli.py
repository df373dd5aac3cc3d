"""The ``glm-token-saver`` command as a user runs it: real processes, real signals."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from gateway.cli import DEMO_CLOUD, DEMO_HARD, DEMO_LOCAL

SECRET = "csk-live-do-not-print-me-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ROOT = str(Path(__file__).resolve().parents[1])


def env_with(**extra: str) -> dict[str, str]:
    """The test's environment, with the working tree importable by the child process."""
    env = {k: v for k, v in os.environ.items() if k != "CEREBRAS_API_KEY"}
    return {**env, "PYTHONPATH": ROOT, **extra}


def cli(*args: str, env: dict[str, str] | None = None, cwd: str | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gateway.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or env_with(), cwd=cwd)


def run_cli(*args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True,
                          env=env_with(**extra))


async def wait_healthy(http, url: str, proc: subprocess.Popen, timeout: float = 15.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            async with http.get(url + "/health") as resp:
                if resp.status == 200:
                    return await resp.json()
        except OSError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("gateway never became healthy")


def test_check_config_prints_effective_config_with_secrets_redacted(tmp_path: Path):
    path = tmp_path / "gw.yaml"
    path.write_text("backends:\n  cloud:\n    api_key: ${KEY}\n    model: glm-4.7-next\n")
    out = run_cli("check-config", str(path), KEY=SECRET)
    assert out.returncode == 0, out.stderr
    assert SECRET not in out.stdout + out.stderr
    assert "api_key: '***'" in out.stdout
    assert "model: glm-4.7-next" in out.stdout
    assert "port: 8000" in out.stdout


def test_check_config_lists_every_problem_by_path(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("listen:\n  port: 99999\nbackends:\n  cloud:\n    timeout_s: 3\n    kind: grpc\n")
    out = run_cli("check-config", str(path))
    assert out.returncode == 2
    for path_text in ("listen.port", "backends.cloud.timeout_s", "backends.cloud.kind"):
        assert path_text in out.stderr
    assert "Traceback" not in out.stderr


async def test_serve_runs_and_stops_cleanly_on_sigterm(tmp_path: Path, http, local_sim):
    port = free_port()
    log_file = tmp_path / "logs" / "gateway.log"
    config = tmp_path / "gw.yaml"
    config.write_text(f"""
listen: {{port: {port}}}
backends:
  local: {{base_url: "{local_sim.url}"}}
  cloud: {{api_key: "${{CEREBRAS_API_KEY}}", enabled: false}}
logging: {{file: "{log_file}"}}
ledger: {{path: "{tmp_path / 'ledger.sqlite3'}"}}
""")
    proc = cli("serve", "--config", str(config), env=env_with(CEREBRAS_API_KEY=SECRET))
    try:
        url = f"http://127.0.0.1:{port}"
        health = await wait_healthy(http, url, proc)
        assert set(health["backends"]) == {"local"}
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as client:
            reply = await client.chat.completions.create(model="glm-4.7", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == local_sim.script.content
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.to_thread(proc.communicate, timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    logged = log_file.read_text()
    assert "listening on" in logged and "shutting down" in logged
    assert SECRET not in logged + stderr


async def test_demo_streams_with_no_model_and_no_key(http, tmp_path: Path):
    port = free_port()
    proc = cli("demo", "--port", str(port), cwd=str(tmp_path))
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_healthy(http, url, proc)
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as client:
            stream = await client.chat.completions.create(
                model="glm-4.7", stream=True, messages=[{"role": "user", "content": "Say hello"}])
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert text == DEMO_LOCAL
            # The demo routes: a hard task goes to the (simulated) cloud.
            hard = await client.chat.completions.with_raw_response.create(
                model="glm-4.7", messages=[{"role": "user", "content": DEMO_HARD}])
            assert hard.headers["x-glm-route-reason"] == "complex"
            assert hard.parse().model_used == "cloud"
            assert hard.parse().choices[0].message.content == DEMO_CLOUD
        proc.send_signal(signal.SIGINT)
        stdout, stderr = await asyncio.to_thread(proc.communicate, timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "curl -N" in stdout


@pytest.mark.parametrize("args", [["serve", "--config", "/nonexistent/gw.yaml"]])
def test_bad_config_path_is_a_clear_error(args):
    out = run_cli(*args)
    assert out.returncode == 2
    assert "/nonexistent/gw.yaml" in out.stderr and "Traceback" not in out.stderr


async def test_sigterm_finishes_short_streams_and_ends_long_ones_with_an_error(tmp_path: Path, http):
    from backends.sim import LlamaCppSim, Script
    from tests.conftest import read_sse

    sim = LlamaCppSim(Script(content=" ".join(f"word{i}" for i in range(200))), tokens_per_s=20)
    await sim.start()
    port = free_port()
    config = tmp_path / "gw.yaml"
    config.write_text(f"""
listen: {{port: {port}}}
backends:
  local: {{base_url: "{sim.url}"}}
  cloud: {{enabled: false}}
server: {{shutdown_grace_s: 1.5}}
logging: {{file: ""}}
ledger: {{path: "{tmp_path / 'ledger.sqlite3'}"}}
""")
    proc = cli("serve", "--config", str(config))
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(http, url, proc)

        async def stream(max_tokens: int) -> list:
            body = {"model": "glm-4.7-local", "stream": True, "max_tokens": max_tokens,
                    "messages": [{"role": "user", "content": f"count {max_tokens}"}]}
            async with http.post(url + "/v1/chat/completions", json=body) as resp:
                return (await read_sse(resp))[0]

        short = asyncio.ensure_future(stream(20))  # ~1 s: finishes within the grace period
        long = asyncio.ensure_future(stream(150))  # ~7.5 s: does not
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        with pytest.raises(OSError):  # no new connections once shutdown began
            async with http.get(url + "/health"):
                pass
        short_events, long_events = await short, await long
        _, stderr = await asyncio.to_thread(proc.communicate, timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
        await sim.stop()
    assert proc.returncode == 0, stderr
    assert short_events[-1] == "[DONE]"
    assert "[DONE]" not in long_events and long_events[-1]["error"]["code"] == "shutting_down"
    import sqlite3

    rows = sqlite3.connect(tmp_path / "ledger.sqlite3").execute("SELECT status FROM requests").fetchall()
    assert sorted(r[0] for r in rows) == ["error", "ok"]  # both recorded: the ledger was flushed


async def test_sighup_reloads_a_valid_config_and_keeps_the_old_one_on_errors(tmp_path: Path, http):
    from backends.sim import LlamaCppSim, Script
    from tests.conftest import read_sse

    sim = LlamaCppSim(Script(content=" ".join(f"word{i}" for i in range(40))), tokens_per_s=20)
    await sim.start()
    port = free_port()
    config = tmp_path / "gw.yaml"

    def write(routed: str, extra: str = "") -> None:
        config.write_text(f"""
listen: {{port: {port}}}
backends:
  local: {{base_url: "{sim.url}"}}
  cloud: {{enabled: false}}
models: {{routed: {routed}}}
server: {{shutdown_grace_s: 5}}
logging: {{file: ""}}
ledger: {{path: "{tmp_path / 'ledger.sqlite3'}"}}
{extra}""")

    async def model_ids() -> list[str]:
        async with http.get(url + "/v1/models") as resp:
            return [m["id"] for m in (await resp.json())["data"]]

    write("glm-4.7")
    proc = cli("serve", "--config", str(config))
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(http, url, proc)
        body = {"model": "glm-4.7", "stream": True, "messages": [{"role": "user", "content": "count"}]}

        async def stream() -> list:
            async with http.post(url + "/v1/chat/completions", json=body) as resp:
                return (await read_sse(resp))[0]

        in_flight = asyncio.ensure_future(stream())  # ~2 s long: it spans the reload
        await asyncio.sleep(0.3)
        write("glm-4.7-next")
        proc.send_signal(signal.SIGHUP)
        for _ in range(50):
            if "glm-4.7-next" in await model_ids():
                break
            await asyncio.sleep(0.1)
        assert await model_ids() == ["glm-4.7-next", "glm-4.7-local"]
        events = await in_flight
        assert events[-1] == "[DONE]"  # the old generation let it finish

        write("glm-4.7-broken", extra="routing: {strategy: fastest}\n")  # not a strategy: invalid
        proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(1.0)
        assert await model_ids() == ["glm-4.7-next", "glm-4.7-local"]  # the running config stays
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.to_thread(proc.communicate, timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        await sim.stop()
    assert proc.returncode == 0
    assert "reload refused, keeping the running config" in stderr and "routing.strategy" in stderr
