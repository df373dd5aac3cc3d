"""The ``glm-token-saver`` command as a user runs it: real processes, real signals."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import anthropic
import openai
import orjson
import pytest

from gateway.app import create_app
from gateway.cli import main
from gateway.demo import DEMO_CLOUD, DEMO_EASY, DEMO_HARD, DEMO_LOCAL, demo_backends, demo_config

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


# Cline's classic prompt, in its shape: a role line, then one section per tool with its parameters
# and an XML usage example, then rules; MCP servers add sections of the same shape. About 8k-12k
# tokens in real use.
CLINE_TOOL = """## {name}
Description: Request to {verb} at the specified path. Use this when you need to {verb} for a task,
for example to analyze code, review text files, or extract information from configuration files.
The tool returns its output as text; binary files are not supported. This tool is one of
{count} tools you can use, one per message, and you will receive the result of that tool use in
the user's response. You use tools step-by-step to accomplish a given task, with each tool use
informed by the result of the previous tool use.
Parameters:
- path: (required) The path of the file to {verb} (relative to the current working directory
  /home/user/project)
- recursive: (optional) Whether to {verb} recursively. Use true for recursive listing.
- regex: (optional) The regular expression pattern to search for. Uses Rust regex syntax.
Usage:
<{name}>
<path>File path here</path>
<recursive>true or false (optional)</recursive>
</{name}>

"""
CLINE_HEAD = """You are Cline, a highly skilled software engineer with extensive knowledge in many
programming languages, frameworks, design patterns, and best practices.

====

TOOL USE

You have access to a set of tools that are executed upon the user's approval. You can use one tool
per message. Tool use is formatted using XML-style tags: the tool name is enclosed in opening and
closing tags, and each parameter is similarly enclosed within its own set of tags.

# Tools

"""
CLINE_VERBS = ("read the contents of a file", "write content to a file", "replace sections of content in a file",
               "search files in a directory", "list files and directories", "list definition names",
               "execute a CLI command", "ask the user a follow-up question", "present the result of your work")


def cline_system_prompt(counter, min_tokens: int) -> str:
    """A Cline-classic system prompt of at least ``min_tokens`` (by the gateway's own counter)."""
    sections, i = [CLINE_HEAD], 0
    while counter.count("".join(sections)) < min_tokens:
        name = f"mcp_{i // len(CLINE_VERBS)}_tool_{i % len(CLINE_VERBS)}" if i >= len(CLINE_VERBS) else \
            ("read_file", "write_to_file", "replace_in_file", "search_files", "list_files",
             "list_code_definition_names", "execute_command", "ask_followup_question", "attempt_completion")[i]
        sections.append(CLINE_TOOL.format(name=name, verb=CLINE_VERBS[i % len(CLINE_VERBS)], count=i + 10))
        i += 1
    return "".join(sections) + "====\n\nRULES\n\n- Your current working directory is: /home/user/project\n"


def cline_first_turn(counter, min_tokens: int = 12_500) -> list[dict]:
    environment = ("<environment_details>\n# VSCode Visible Files\nREADME.md\n\n# VSCode Open Tabs\nREADME.md\n\n"
                   "# Current Time\n12/1/2026, 9:14:03 AM (UTC)\n\n# Current Working Directory (/home/user/project) "
                   "Files\nREADME.md\npyproject.toml\nsrc/\nsrc/app.py\ntests/\ntests/test_app.py\n\n"
                   "# Context Window Usage\n0 / 64K tokens used (0%)\n\n# Current Mode\nACT MODE\n"
                   "</environment_details>")
    task = '<task>\nFix the typo "recieve" in README.md\n</task>'
    return [{"role": "system", "content": cline_system_prompt(counter, min_tokens)},
            {"role": "user", "content": [{"type": "text", "text": task}, {"type": "text", "text": environment}]}]


async def test_demo_serves_a_cline_sized_request_locally(aiohttp_server, http, tmp_path: Path, token_counter):
    """Issue #12: the demo's llama.cpp held 8192 tokens, less than Cline's system prompt, so every
    Cline request went to the cloud (``context``). Same simulators, same config as the demo."""
    local, cloud = demo_backends()
    assert local.n_ctx >= 65_536
    local_url, cloud_url = await local.start(), await cloud.start()
    try:
        cfg = demo_config("127.0.0.1", 0, local_url, cloud_url, str(tmp_path / "ledger.sqlite3"))
        server = await aiohttp_server(create_app(cfg, token_counter=token_counter))
        for _ in range(100):  # the first probe learns llama.cpp's real window from /props
            async with http.get(server.make_url("/health")) as resp:
                backends = (await resp.json())["backends"]
            if backends["local"]["state"] == "ok":
                break
            await asyncio.sleep(0.05)
        assert backends["local"]["context_window"] == local.n_ctx
        messages = cline_first_turn(token_counter)
        assert sum(token_counter.count_message(m)[0] for m in messages) >= 12_000
        async with openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="x", max_retries=0) as client:
            raw = await client.chat.completions.with_raw_response.create(model="glm-4.7", messages=messages)
            stream = await client.chat.completions.create(model="glm-4.7", messages=messages, stream=True)
            streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    finally:
        await local.stop()
        await cloud.stop()
    assert raw.headers["x-glm-backend"] == "local" and raw.headers["x-glm-route-reason"] == "simple"
    reply = raw.parse()
    assert reply.choices[0].message.content == DEMO_LOCAL and reply.usage.prompt_tokens >= 12_000
    assert streamed == DEMO_LOCAL
    assert [r.body["stream"] for r in local.requests] == [True, True] and not cloud.requests


async def test_the_demo_examples_show_local_cloud_and_an_escalation(aiohttp_server, http, tmp_path: Path,
                                                                   token_counter, capsys):
    """The README's demo walk-through: the example bodies the CLI prints, against the demo's wiring."""
    local, cloud = demo_backends()
    local_url, cloud_url = await local.start(), await cloud.start()
    try:
        cfg = demo_config("127.0.0.1", 0, local_url, cloud_url, str(tmp_path / "ledger.sqlite3"))
        server = await aiohttp_server(create_app(cfg, token_counter=token_counter))
        seen = {}
        for name in ("easy", "hard", "escalation"):
            assert main(["example", name]) == 0
            body = orjson.loads(capsys.readouterr().out)
            async with http.post(server.make_url("/v1/chat/completions"), json=body) as resp:
                assert resp.status == 200, await resp.text()
                seen[name] = (resp.headers["x-glm-backend"], resp.headers["x-glm-route-reason"])
    finally:
        await local.stop()
        await cloud.stop()
    assert seen == {"easy": ("local", "simple"), "hard": ("cloud", "complex"), "escalation": ("cloud", "escalated")}


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


async def test_demo_streams_with_no_model_and_no_key(http, tmp_path: Path, token_counter):
    port = free_port()
    proc = cli("demo", "--port", str(port), cwd=str(tmp_path))
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_healthy(http, url, proc)
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as client:
            stream = await client.chat.completions.create(
                model="glm-4.7", stream=True, messages=[{"role": "user", "content": DEMO_EASY}])
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert text == DEMO_LOCAL
            # The demo routes: a hard task goes to the (simulated) cloud.
            hard = await client.chat.completions.with_raw_response.create(
                model="glm-4.7", messages=[{"role": "user", "content": DEMO_HARD}])
            assert hard.headers["x-glm-route-reason"] == "complex"
            assert hard.parse().model_used == "cloud"
            assert hard.parse().choices[0].message.content == DEMO_CLOUD
            # Cline's first turn (a 12k-token system prompt) fits the demo's local context.
            cline = await client.chat.completions.with_raw_response.create(
                model="glm-4.7", messages=cline_first_turn(token_counter))
            assert cline.headers["x-glm-backend"] == "local" and cline.headers["x-glm-route-reason"] == "simple"
        # Claude Code's way in: the Messages API, through the same routing.
        async with anthropic.AsyncAnthropic(base_url=url, api_key="x", max_retries=0) as claude:
            async with claude.messages.stream(model="claude-sonnet-4-5", max_tokens=512,
                                              messages=[{"role": "user", "content": DEMO_EASY}]) as s:
                assert await s.get_final_text() == DEMO_LOCAL
        proc.send_signal(signal.SIGINT)
        stdout, stderr = await asyncio.to_thread(proc.communicate, timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "curl -N" in stdout and "/v1/messages" in stdout


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
        assert await model_ids() == ["glm-4.7-next", "glm-4.7-local", "glm-4.7-next@local"]
        events = await in_flight
        assert events[-1] == "[DONE]"  # the old generation let it finish

        write("glm-4.7-broken", extra="routing: {strategy: fastest}\n")  # not a strategy: invalid
        proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(1.0)
        assert await model_ids() == ["glm-4.7-next", "glm-4.7-local", "glm-4.7-next@local"]  # the running config stays
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.to_thread(proc.communicate, timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        await sim.stop()
    assert proc.returncode == 0
    assert "reload refused, keeping the running config" in stderr and "routing.strategy" in stderr
