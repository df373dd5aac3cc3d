"""Wire-format facts of the llama-server and Cerebras simulators, checked with a raw client.

No gateway is involved: each test talks HTTP to a simulator and asserts what a real upstream
sends (docs/protocols.md §1, §2 and the measurements of §8).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import time

import aiohttp
import orjson
import pytest

from backends.sim import (
    CerebrasSim,
    Fault,
    LlamaCppSim,
    Script,
    estimate_prompt_tokens,
    tokenize,
)

TOOL_ARGS = '{"path": "src/main.py", "line": 12}'
TOOL_TOKENS = 5  # one token per 8-character argument fragment: ceil(35 / 8)
SCRIPT = Script(content="The answer is 42, of course.", reasoning="Let me think about it.",
                tool_calls=({"name": "read_file", "arguments": TOOL_ARGS},))
PLAIN = Script(content="one two three four five six seven eight nine ten")
USER = [{"role": "system", "content": "You are terse."},
        {"role": "user", "content": [{"type": "text", "text": "What is the answer?"}]}]


@pytest.fixture
async def session():
    # force_close: llama-server kills the socket after each stream (§8); pooled reuse would race.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        yield s


@pytest.fixture
async def llama():
    sim = LlamaCppSim(SCRIPT, tokens_per_s=None)
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def cerebras():
    sim = CerebrasSim(SCRIPT, tokens_per_s=None)
    await sim.start()
    yield sim
    await sim.stop()


def events(raw: bytes) -> list:
    """SSE `data:` payloads in order: parsed JSON, the string "[DONE]", or raw text if invalid."""
    out = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        assert block.startswith("data: "), block
        data = block[len("data: "):]
        try:
            out.append("[DONE]" if data == "[DONE]" else orjson.loads(data))
        except orjson.JSONDecodeError:
            out.append(data)
    return out


def deltas(chunks: list, key: str) -> list[str]:
    """Non-null values of delta[key], in order (the llama role chunk carries content: null)."""
    return [c["choices"][0]["delta"][key] for c in chunks
            if isinstance(c, dict) and c.get("choices")
            and c["choices"][0]["delta"].get(key) is not None]


async def post(session, sim, body: dict, **kw) -> tuple[aiohttp.ClientResponse, bytes]:
    async with session.post(sim.url + "/chat/completions", json=body, **kw) as resp:
        return resp, await resp.read()


def llama_body(**extra) -> dict:
    return {"model": "whatever", "messages": USER, **extra}


def cerebras_body(**extra) -> dict:
    return {"model": "zai-glm-4.7", "messages": USER, **extra}


# -- shared pieces ---------------------------------------------------------------------------
def test_tokenize_round_trips_and_estimates():
    for text in ["", "  ", "a", " lead and trail  ", "x\n\ny\tz \n"]:
        assert "".join(tokenize(text)) == text
    assert tokenize("Hello big world") == ["Hello", " big", " world"]
    assert estimate_prompt_tokens(USER) == len("You are terse.What is the answer?") // 4
    assert estimate_prompt_tokens([{"role": "user", "content": ""}]) == 1


# -- llama-server ----------------------------------------------------------------------------
async def test_llama_stream_order_fields_and_usage_chunk(llama, session):
    resp, raw = await post(session, llama, llama_body(
        stream=True, stream_options={"include_usage": True}, top_k=40, min_p=0.05,
        cache_prompt=True))
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    chunks = events(raw)
    assert chunks[-1] == "[DONE]"
    body = chunks[:-1]
    assert body[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    kinds = [next(iter(c["choices"][0]["delta"]), "") if c["choices"] else "usage" for c in body]
    # role, reasoning..., content..., tool header + fragments, finish ({}), usage
    order = [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k]
    assert order == ["role", "reasoning_content", "content", "tool_calls", "", "usage"]
    assert "".join(deltas(body, "reasoning_content")) == SCRIPT.reasoning
    assert "".join(deltas(body, "content")) == SCRIPT.content
    calls = deltas(body, "tool_calls")
    head = calls[0][0]
    assert head["index"] == 0 and head["type"] == "function" and head["id"].startswith("call_")
    assert head["function"] == {"name": "read_file", "arguments": ""}
    assert all(set(c[0]) == {"index", "function"} for c in calls[1:])
    assert "".join(c[0]["function"]["arguments"] for c in calls[1:]) == TOOL_ARGS
    for c in body[:-2]:
        assert c["choices"][0]["finish_reason"] is None and c["choices"][0]["index"] == 0
    finish, usage_chunk = body[-2], body[-1]
    assert finish["choices"][0] == {"finish_reason": "tool_calls", "index": 0, "delta": {}}
    assert "timings" not in finish and "usage" not in finish
    assert usage_chunk["choices"] == []
    n_frag = len(calls) - 1
    assert n_frag == TOOL_TOKENS
    expected = len(tokenize(SCRIPT.reasoning)) + len(tokenize(SCRIPT.content)) + n_frag
    prompt = estimate_prompt_tokens(USER)
    assert usage_chunk["usage"] == {"completion_tokens": expected, "prompt_tokens": prompt,
                                    "total_tokens": expected + prompt,
                                    "prompt_tokens_details": {"cached_tokens": 0}}
    assert set(usage_chunk["timings"]) == {
        "cache_n", "prompt_n", "prompt_ms", "prompt_per_token_ms", "prompt_per_second",
        "predicted_n", "predicted_ms", "predicted_per_token_ms", "predicted_per_second"}
    assert usage_chunk["timings"]["predicted_n"] == expected
    ids = {c["id"] for c in body}
    assert len(ids) == 1 and re.fullmatch(r"chatcmpl-[A-Za-z0-9]+", ids.pop())
    for c in body:
        assert c["object"] == "chat.completion.chunk" and c["model"] == "local-model"
        assert re.fullmatch(r"b\d+-[0-9a-f]+", c["system_fingerprint"])
        assert isinstance(c["created"], int)
    [rec] = llama.requests
    assert (rec.outcome, rec.tokens_sent, rec.fault) == ("completed", expected, None)
    assert rec.body["top_k"] == 40


async def test_llama_timings_ride_on_finish_chunk_without_include_usage(llama, session):
    llama.script = Script(content="Hi there")
    _, raw = await post(session, llama, llama_body(stream=True))
    chunks = events(raw)
    assert chunks[-1] == "[DONE]"
    finish = chunks[-2]
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert finish["timings"]["predicted_n"] == 2 and "usage" not in finish
    assert all(c["choices"] for c in chunks[:-1])  # no choices:[] usage chunk


async def test_llama_non_stream_shape(llama, session):
    resp, raw = await post(session, llama, llama_body())
    data = orjson.loads(raw)
    assert resp.status == 200 and data["object"] == "chat.completion"
    message = data["choices"][0]["message"]
    assert message["content"] == SCRIPT.content
    assert message["reasoning_content"] == SCRIPT.reasoning
    assert message["tool_calls"][0]["function"] == {"name": "read_file", "arguments": TOOL_ARGS}
    assert data["choices"][0]["finish_reason"] == "tool_calls"
    assert data["usage"]["prompt_tokens"] == estimate_prompt_tokens(USER)
    assert data["timings"]["predicted_n"] == data["usage"]["completion_tokens"]


async def test_llama_prefill_echoes_then_continues(llama, session):
    prefill = "The answer is"
    messages = USER + [{"role": "assistant", "content": prefill}]
    _, raw = await post(session, llama, llama_body(messages=messages, stream=True))
    content = deltas(events(raw), "content")
    assert content[0] == prefill  # measured echo (§8)
    assert "".join(content[1:]) == " 42, of course."
    assert deltas(events(raw), "reasoning_content") == []  # reasoning forced off in prefill
    _, raw = await post(session, llama, llama_body(messages=messages))
    data = orjson.loads(raw)
    assert data["choices"][0]["message"]["content"] == SCRIPT.content
    assert data["usage"]["completion_tokens"] == len(tokenize(" 42, of course.")) + TOOL_TOKENS
    # A prefill that is not a prefix of the script gets the whole script after it.
    messages[-1] = {"role": "assistant", "content": "Well,"}
    _, raw = await post(session, llama, llama_body(messages=messages, stream=True))
    content = deltas(events(raw), "content")
    assert content[0] == "Well," and "".join(content[1:]) == SCRIPT.content


async def test_llama_prefill_refusals(session):
    sim = LlamaCppSim(PLAIN, tokens_per_s=None, thinking=True)
    await sim.start()
    try:
        prefill = USER + [{"role": "assistant", "content": "one two"}]
        resp, raw = await post(session, sim, llama_body(messages=prefill, stream=True))
        assert resp.status == 400
        assert orjson.loads(raw) == {"error": {
            "code": 400, "type": "invalid_request_error",
            "message": "Assistant response prefill is incompatible with enable_thinking."}}
        resp, raw = await post(session, sim, llama_body(
            messages=prefill, chat_template_kwargs={"enable_thinking": False}))
        assert resp.status == 200
        assert orjson.loads(raw)["choices"][0]["message"]["content"] == PLAIN.content
        two = prefill + [{"role": "assistant", "content": "three"}]
        resp, raw = await post(session, sim, llama_body(
            messages=two, chat_template_kwargs={"enable_thinking": False}))
        assert resp.status == 400
        assert orjson.loads(raw)["error"]["message"] == (
            "Cannot have 2 or more assistant messages at the end of the list.")
        assert [r.outcome for r in sim.requests] == ["rejected", "completed", "rejected"]
    finally:
        await sim.stop()


async def test_llama_rejects_n_and_bad_json(llama, session):
    resp, raw = await post(session, llama, llama_body(n=2))
    assert resp.status == 400
    assert orjson.loads(raw)["error"]["message"] == "Only one completion choice is allowed"
    async with session.post(llama.url + "/chat/completions", data=b"{nope") as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["type"] == "invalid_request_error"


async def test_llama_loading_answers_503_except_models(session):
    sim = LlamaCppSim(PLAIN, tokens_per_s=None, loading=True)
    base = await sim.start()
    root = base.removesuffix("/v1")
    loading = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
    try:
        for path in ("/health", "/v1/health", "/props", "/slots", "/metrics"):
            async with session.get(root + path) as resp:
                assert (resp.status, await resp.json()) == (503, loading), path
        resp, raw = await post(session, sim, llama_body())
        assert (resp.status, orjson.loads(raw)) == (503, loading)
        assert [r.outcome for r in sim.requests] == ["rejected"]
        async with session.get(base + "/models") as resp:
            assert resp.status == 200 and (await resp.json())["data"][0]["meta"] is None
        sim.loading = False
        async with session.get(root + "/health") as resp:
            assert (resp.status, await resp.json()) == (200, {"status": "ok"})
        async with session.get(base + "/models") as resp:
            model = (await resp.json())["data"][0]
        assert model["id"] == "local-model" and model["owned_by"] == "llamacpp"
        assert model["meta"]["n_ctx_train"] > 0
    finally:
        await sim.stop()


async def test_llama_context_overflow_is_pre_stream_400(session):
    sim = LlamaCppSim(PLAIN, tokens_per_s=None, n_ctx=16)
    await sim.start()
    try:
        long = [{"role": "user", "content": "x" * 400}]
        resp, raw = await post(session, sim, llama_body(messages=long, stream=True))
        assert resp.status == 400 and resp.headers["Connection"] == "close"
        assert orjson.loads(raw) == {"error": {
            "code": 400, "type": "exceed_context_size_error", "n_prompt_tokens": 100,
            "n_ctx": 16, "message": "request (100 tokens) exceeds the available context size "
                                    "(16 tokens), try increasing it"}}
        sim.push_faults(Fault.context_overflow())
        resp, raw = await post(session, sim, llama_body(stream=True))
        assert resp.status == 400
        assert orjson.loads(raw)["error"]["n_prompt_tokens"] > 16
        assert [(r.outcome, r.fault) for r in sim.requests] == [
            ("rejected", None), ("fault", "context_overflow")]
    finally:
        await sim.stop()


async def test_llama_reports_cached_prefix(llama, session):
    await post(session, llama, llama_body())
    longer = USER + [{"role": "assistant", "content": "42"},
                     {"role": "user", "content": "And why is that so?"}]
    _, raw = await post(session, llama, llama_body(messages=longer))
    data = orjson.loads(raw)
    assert data["usage"]["prompt_tokens_details"]["cached_tokens"] == estimate_prompt_tokens(USER)
    assert data["timings"]["cache_n"] == estimate_prompt_tokens(USER)
    _, raw = await post(session, llama, llama_body(messages=longer, cache_prompt=False))
    assert orjson.loads(raw)["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


async def _raw_stream(port: int, path: str, body: dict):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    payload = orjson.dumps(body)
    writer.write(b"POST %s HTTP/1.1\r\nHost: sim\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % (path.encode(), len(payload)) + payload)
    data = b""
    while not data.endswith(b"0\r\n\r\n"):
        chunk = await asyncio.wait_for(reader.read(65536), 2)
        assert chunk, "connection closed before the response ended"
        data += chunk
    return reader, writer, data.split(b"\r\n\r\n")[0].decode().lower()


async def test_llama_closes_connection_after_stream_despite_keep_alive():
    for close in (True, False):
        sim = LlamaCppSim(PLAIN, tokens_per_s=None, close_after_stream=close)
        base = await sim.start()
        port = int(base.rsplit(":", 1)[1].split("/")[0])
        try:
            reader, writer, head = await _raw_stream(
                port, "/v1/chat/completions", llama_body(stream=True))
            assert "connection: close" not in head and "keep-alive: timeout=5" in head
            if close:
                assert await asyncio.wait_for(reader.read(), 1.0) == b""  # EOF: server closed
            else:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(reader.read(1), 0.2)
            writer.close()
        finally:
            await sim.stop()


async def test_llama_slots_queue_and_metrics(session):
    sim = LlamaCppSim(PLAIN, tokens_per_s=50, n_slots=1)
    base = await sim.start()
    root = base.removesuffix("/v1")
    try:
        first = asyncio.create_task(post(session, sim, llama_body(stream=True)))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(post(session, sim, llama_body(stream=True)))
        await asyncio.sleep(0.05)
        async with session.get(root + "/metrics") as resp:
            text = await resp.text()
        assert "llamacpp:requests_processing 1" in text
        assert "llamacpp:requests_deferred 1" in text
        async with session.get(root + "/slots") as resp:
            assert [s["is_processing"] for s in await resp.json()] == [True]
        async with session.get(root + "/slots?fail_on_no_slot=1") as resp:
            assert resp.status == 503
        (r1, _), (r2, raw2) = await asyncio.gather(first, second)
        assert r1.status == r2.status == 200 and events(raw2)[-1] == "[DONE]"
        a, b = sim.requests
        assert b.ended - a.ended >= 9 / 50  # the second waited for the only slot
        async with session.get(root + "/metrics") as resp:
            assert "llamacpp:tokens_predicted_total 20" in await resp.text()
        async with session.get(root + "/props") as resp:
            props = await resp.json()
        assert props["total_slots"] == 1 and props["default_generation_settings"]["n_ctx"] == 8192
        sim.metrics = False
        async with session.get(root + "/metrics") as resp:
            assert resp.status == 501
            assert (await resp.json())["error"]["type"] == "not_supported_error"
    finally:
        await sim.stop()


async def test_llama_slow_first_token_delays_headers(session):
    sim = LlamaCppSim(PLAIN, tokens_per_s=None)
    await sim.start()
    sim.push_faults(Fault.slow_first_token(0.3))
    try:
        t0 = time.monotonic()
        async with session.post(sim.url + "/chat/completions",
                                json=llama_body(stream=True)) as resp:
            t_headers = time.monotonic() - t0
            await resp.read()
        assert t_headers >= 0.29
        assert sim.requests[0].outcome == "completed"
        assert sim.requests[0].fault == "slow_first_token"
    finally:
        await sim.stop()


async def test_llama_stall_then_continue(session):
    sim = LlamaCppSim(PLAIN, tokens_per_s=None)
    await sim.start()
    sim.push_faults(Fault.stall_after(2, seconds=0.3))
    try:
        async with session.post(sim.url + "/chat/completions",
                                json=llama_body(stream=True)) as resp:
            stamps = []
            async for line in resp.content:
                if line.startswith(b"data: ") and b'"content":"' in line:
                    stamps.append(time.monotonic())
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        assert len(stamps) == 10 and gaps[1] >= 0.29 and max(gaps[2:]) < 0.2
        assert (sim.requests[0].outcome, sim.requests[0].tokens_sent) == ("completed", 10)
    finally:
        await sim.stop()


async def test_llama_malformed_then_continues_and_no_done(llama, session):
    llama.script = PLAIN
    llama.push_faults(Fault.malformed_after(2), Fault.no_done(seconds=0))
    _, raw = await post(session, llama, llama_body(stream=True))
    chunks = events(raw)
    assert chunks[3] == '{"choices": ['  # role, 2 tokens, then the broken line
    assert "".join(deltas(chunks, "content")) == PLAIN.content and chunks[-1] == "[DONE]"
    _, raw = await post(session, llama, llama_body(
        stream=True, stream_options={"include_usage": True}))
    chunks = events(raw)
    assert chunks[-1] != "[DONE]" and chunks[-1]["choices"] == []


async def test_llama_error_event_without_done(llama, session):
    llama.script = PLAIN
    llama.push_faults(Fault.error_event_after(3), Fault.error_event_after(0))
    resp, raw = await post(session, llama, llama_body(stream=True))
    chunks = events(raw)
    assert resp.status == 200 and len(deltas(chunks, "content")) == 3
    assert chunks[-1] == {"error": {"code": 500, "message": "Internal server error",
                                    "type": "server_error"}}
    # An error before the first token is a plain HTTP error, as in llama-server.
    resp, raw = await post(session, llama, llama_body(stream=True))
    assert resp.status == 500 and orjson.loads(raw)["error"]["type"] == "server_error"
    assert [(r.outcome, r.tokens_sent) for r in llama.requests] == [("fault", 3), ("fault", 0)]


async def test_llama_cut_and_reset(llama, session):
    llama.script = PLAIN
    llama.push_faults(Fault.cut_after(3), Fault.reset_before_headers(), Fault.http_error(503))
    async with session.post(llama.url + "/chat/completions",
                            json=llama_body(stream=True)) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await post(session, llama, llama_body(stream=True))
    resp, raw = await post(session, llama, llama_body())
    assert resp.status == 503 and orjson.loads(raw)["error"]["type"] == "unavailable_error"
    recs = await llama.wait_for_requests(3)
    assert [(r.fault, r.outcome) for r in recs] == [
        ("cut_after", "fault"), ("reset_before_headers", "fault"), ("http_error", "fault")]
    assert recs[0].tokens_sent == 3


async def test_faults_on_non_streamed_answers(llama, session):
    llama.script = PLAIN
    llama.push_faults(Fault.malformed_after(1), Fault.error_event_after(1, status=503),
                      Fault.cut_after(1), Fault.stall_after(5, seconds=0.2))
    resp, raw = await post(session, llama, llama_body())
    assert resp.status == 200 and raw == b'{"choices": ['
    resp, raw = await post(session, llama, llama_body())
    assert resp.status == 503 and orjson.loads(raw)["error"]["code"] == 503
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await post(session, llama, llama_body())
    t0 = time.monotonic()
    resp, raw = await post(session, llama, llama_body())
    assert time.monotonic() - t0 >= 0.19
    assert orjson.loads(raw)["choices"][0]["message"]["content"] == PLAIN.content
    assert [(r.outcome, r.tokens_sent) for r in llama.requests] == [
        ("fault", 1), ("fault", 1), ("fault", 1), ("completed", 10)]


async def test_push_faults_queue_order_then_default(llama, session):
    llama.script = PLAIN
    llama.default_fault = Fault.no_done(seconds=0)
    llama.push_faults(Fault.http_error(500), None, Fault.http_error(429, retry_after=3))
    statuses = []
    for _ in range(4):
        resp, raw = await post(session, llama, llama_body(stream=True))
        statuses.append(resp.status)
    assert statuses == [500, 200, 429, 200]
    assert resp.headers.get("retry-after") is None
    assert [r.fault for r in llama.requests] == ["http_error", None, "http_error", "no_done"]
    assert events(raw)[-1] != "[DONE]"


async def test_client_disconnect_is_recorded_as_cancelled_at_once(session):
    sim = LlamaCppSim(PLAIN, tokens_per_s=20, n_slots=1)
    base = await sim.start()
    try:
        resp = await session.post(sim.url + "/chat/completions", json=llama_body(stream=True))
        await resp.content.readuntil(b"\n\n")
        await resp.content.readuntil(b"\n\n")
        t_close = time.monotonic()
        resp.close()
        [rec] = await sim.wait_for_requests(1, timeout=1.0)
        assert rec.outcome == "cancelled" and rec.ended - t_close < 0.1
        assert rec.tokens_sent < 10
        async with session.get(base.removesuffix("/v1") + "/slots") as slots:
            assert [s["is_processing"] for s in await slots.json()] == [False]
    finally:
        await sim.stop()


# -- llama-server prompt processing and return_progress (§2.4, §8.x) ---------------------------
def words(n_tokens: int, tag: str = "w") -> str:
    """Text of exactly n_tokens estimated prompt tokens (4 characters each)."""
    return (f"{tag}{tag}{tag} " * n_tokens)[:n_tokens * 4]


LONG = [{"role": "user", "content": words(3000)}]  # 3,000 tokens: one full batch and a part


async def timed_stream(session, sim, body: dict) -> tuple[float, list[tuple[float, object]]]:
    """(seconds to the headers, [(seconds, event)]) of one stream, from the request's start."""
    t0 = time.monotonic()
    async with session.post(sim.url + "/chat/completions", json=body) as resp:
        assert resp.status == 200
        t_headers = time.monotonic() - t0
        out = []
        async for line in resp.content:
            if line.startswith(b"data: "):
                [event] = events(line.strip() + b"\n\n")
                out.append((time.monotonic() - t0, event))
    return t_headers, out


def progress_of(chunks: list) -> list[dict]:
    return [c["prompt_progress"] for c in chunks if isinstance(c, dict) and "prompt_progress" in c]


async def test_llama_return_progress_chunks_precede_content(session):
    sim = LlamaCppSim(PLAIN, tokens_per_s=None, prefill_tokens_per_s=20_000)
    await sim.start()
    try:
        _, timed = await timed_stream(session, sim, llama_body(
            messages=LONG, stream=True, return_progress=True,
            stream_options={"include_usage": True}))
        chunks = [e for _, e in timed]
        first_content = next(i for i, c in enumerate(chunks) if deltas([c], "content"))
        # role chunks with progress; then the plain role chunk that rides with the first token
        for c in chunks[:first_content]:
            assert c["choices"][0] == {"finish_reason": None, "index": 0,
                                       "delta": {"role": "assistant", "content": None}}
        assert ["prompt_progress" in c for c in chunks[:first_content]] == [True] * 3 + [False]
        wire = chunks[0]
        assert list(wire) == ["choices", "created", "id", "model", "system_fingerprint",
                              "object", "prompt_progress"]
        assert list(wire["prompt_progress"]) == ["total", "cache", "processed", "time_ms"]
        progress = progress_of(chunks)
        assert not progress_of(chunks[first_content:])
        # the start, then one per 2,048-token batch; processed counts the cache too
        assert [p["processed"] for p in progress] == [0, 2048, 3000]
        assert {(p["total"], p["cache"]) for p in progress} == {(3000, 0)}
        times = [p["time_ms"] for p in progress]
        assert times == sorted(times) and len(set(times)) == 3 and all(
            isinstance(t, int) for t in times)
        assert abs(times[-1] - 150) < 60
        # then content, finish, usage (with timings), [DONE]
        assert "".join(deltas(chunks, "content")) == PLAIN.content
        finish, usage, done = chunks[-3:]
        assert finish["choices"][0]["finish_reason"] == "stop" and done == "[DONE]"
        assert usage["choices"] == [] and usage["timings"]["prompt_n"] == 3000
        assert usage["usage"]["prompt_tokens"] == 3000
        # the headers came with the first progress chunk, well before the first content
        t_first, t_content = timed[0][0], timed[first_content][0]
        assert t_first < 0.05 and t_content - t_first > 0.1
        # slow_first_token is a silent wait before prompt processing: no progress, no headers
        sim.push_faults(Fault.slow_first_token(0.2))
        t_headers, timed = await timed_stream(session, sim, llama_body(
            messages=[{"role": "user", "content": words(3000, "f")}], stream=True,
            return_progress=True))
        assert t_headers >= 0.19 and timed[-2][0] - t_headers >= 0.14
        assert [p["time_ms"] < 60 for p in progress_of([e for _, e in timed])] == [
            True, False, False]  # time_ms counts from the start of prompt processing
    finally:
        await sim.stop()


async def test_llama_prefill_without_return_progress_delays_first_token(session):
    sim = LlamaCppSim(PLAIN, tokens_per_s=None)
    await sim.start()
    sim.prefill_tokens_per_s = 20_000  # settable after construction
    try:
        t_headers, timed = await timed_stream(session, sim, llama_body(
            messages=LONG, stream=True, stream_options={"include_usage": True}))
        chunks = [e for _, e in timed]
        assert not progress_of(chunks) and all(
            "prompt_progress" not in c for c in chunks if isinstance(c, dict))
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
        assert t_headers >= 0.14  # no headers before the first token
        assert timed[1][0] >= 0.14 and deltas([chunks[1]], "content")
        assert chunks[-2]["timings"]["prompt_ms"] >= 140
        # return_progress means nothing without a stream; the wait is the same
        t0 = time.monotonic()
        _, raw = await post(session, sim, llama_body(
            messages=[{"role": "user", "content": words(3000, "n")}], return_progress=True))
        assert time.monotonic() - t0 >= 0.14
        assert "prompt_progress" not in orjson.loads(raw)
        assert orjson.loads(raw)["timings"]["cache_n"] == 0
        # slow_first_token adds to prompt processing, still before any header
        sim.push_faults(Fault.slow_first_token(0.1))
        t_headers, _ = await timed_stream(session, sim, llama_body(
            messages=[{"role": "user", "content": words(3000, "z")}], stream=True))
        assert t_headers >= 0.24
    finally:
        await sim.stop()


async def test_llama_prefill_timings_and_cached_prefix(session):
    sim = LlamaCppSim(PLAIN, tokens_per_s=None, prefill_tokens_per_s=20_000)
    await sim.start()
    try:
        _, raw = await post(session, sim, llama_body(messages=LONG))
        first = orjson.loads(raw)["timings"]
        assert (first["cache_n"], first["prompt_n"]) == (0, 3000)
        assert 0.6 * 20_000 <= first["prompt_per_second"] <= 1.4 * 20_000
        assert abs(first["prompt_ms"] - 150) < 60
        # The same conversation with one more turn: its prefix is cached and skipped.
        longer = LONG + [{"role": "assistant", "content": words(50, "a")},
                         {"role": "user", "content": words(150, "u")}]
        _, timed = await timed_stream(session, sim, llama_body(
            messages=longer, stream=True, return_progress=True,
            stream_options={"include_usage": True}))
        chunks = [e for _, e in timed]
        again = chunks[-2]["timings"]
        assert (again["cache_n"], again["prompt_n"]) == (3000, 200)
        assert chunks[-2]["usage"]["prompt_tokens_details"]["cached_tokens"] == 3000
        assert again["prompt_ms"] < first["prompt_ms"] / 4
        assert [(p["cache"], p["processed"], p["total"]) for p in progress_of(chunks)] == [
            (3000, 3000, 3200), (3000, 3200, 3200)]
    finally:
        await sim.stop()


async def test_llama_prompt_cache_survives_an_interleaved_conversation(session):
    a = [{"role": "user", "content": words(400, "a")}]
    b = [{"role": "user", "content": words(400, "b")}]
    a2 = a + [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "more"}]

    async def cache_n(sim, messages) -> int:
        _, raw = await post(session, sim, llama_body(messages=messages))
        return orjson.loads(raw)["timings"]["cache_n"]

    for size, expected in ((8, 400), (1, 0)):  # 1: only the previous prompt, as before
        sim = LlamaCppSim(PLAIN, tokens_per_s=None, prompt_cache_size=size)
        await sim.start()
        try:
            assert [await cache_n(sim, m) for m in (a, b, a2)] == [0, 0, expected]
        finally:
            await sim.stop()
    sim = LlamaCppSim(PLAIN, tokens_per_s=None)  # 8 entries, least recently used goes first
    await sim.start()
    try:
        others = [[{"role": "user", "content": words(100, f"{i}x")}] for i in range(8)]
        for m in [a, *others[:7]]:
            await cache_n(sim, m)
        assert await cache_n(sim, a2) == 400  # a was the 8th most recent: still cached
        for m in others:
            await cache_n(sim, m)
        assert await cache_n(sim, a2 + [{"role": "user", "content": "x"}]) == 0  # evicted
    finally:
        await sim.stop()


async def slots_of(session, sim) -> list[dict]:
    async with session.get(sim.url.removesuffix("/v1") + "/slots") as resp:
        return await resp.json()


async def wait_idle(session, sim, timeout: float = 1.0) -> float:
    t0 = time.monotonic()
    while any(s["is_processing"] for s in await slots_of(session, sim)):
        assert time.monotonic() - t0 < timeout, "the slot was not freed"
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


async def test_llama_disconnect_during_prefill_frees_the_slot(session):
    # 6,000 tokens at 10,000 tokens/s: 0.6 s of prompt processing, a batch every ~0.2 s.
    head = {"role": "system", "content": words(1000, "s")}
    prompt = [head, {"role": "user", "content": words(5000, "q")}]
    sim = LlamaCppSim(PLAIN, tokens_per_s=None, prefill_tokens_per_s=10_000, n_slots=1)
    await sim.start()
    try:
        # Without return_progress nothing has been sent yet: the client leaves while waiting.
        task = asyncio.create_task(post(session, sim, llama_body(messages=prompt, stream=True)))
        await asyncio.sleep(0.1)
        [slot] = await slots_of(session, sim)
        assert slot["is_processing"] and slot["id_task"] == 1 and slot["n_ctx"] == 8192
        assert (slot["n_prompt_tokens"], slot["n_prompt_tokens_cache"],
                slot["n_prompt_tokens_processed"]) == (6000, 0, 0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await wait_idle(session, sim) < 1.0
        [rec] = await sim.wait_for_requests(1)
        assert rec.outcome == "cancelled" and rec.tokens_sent == 0
        # With progress: leave after the first batch; only what was processed stays cached.
        resp = await session.post(sim.url + "/chat/completions", json=llama_body(
            messages=prompt, stream=True, return_progress=True))
        seen = []
        while len(seen) < 2:
            [chunk] = events(await resp.content.readuntil(b"\n\n"))
            seen.append(chunk["prompt_progress"]["processed"])
        assert seen == [0, 2048]
        resp.close()
        assert await wait_idle(session, sim) < 1.0
        [slot] = await slots_of(session, sim)
        assert slot["id_task"] == 2 and slot["n_prompt_tokens_processed"] == 2048
        assert (await sim.wait_for_requests(2))[1].outcome == "cancelled"
        # 2,048 processed tokens covered the system message, not the user's: cache_n 1000.
        sim.prefill_tokens_per_s = math.inf  # instant, progress chunks still sent
        _, timed = await timed_stream(session, sim, llama_body(
            messages=prompt, stream=True, return_progress=True))
        progress = progress_of([e for _, e in timed])
        assert [p["processed"] for p in progress] == [1000, 3048, 5096, 6000]
        assert {p["cache"] for p in progress} == {1000} and timed[-1][0] < 0.1
        sim.prefill_tokens_per_s = None  # not simulated: no progress chunks at all
        _, raw = await post(session, sim, llama_body(
            messages=prompt, stream=True, return_progress=True))
        assert not progress_of(events(raw))
        _, raw = await post(session, sim, llama_body(messages=[head, {
            "role": "user", "content": words(5000, "r")}]))
        assert orjson.loads(raw)["timings"]["cache_n"] == 1000  # the system message only
        [slot] = await slots_of(session, sim)
        assert (slot["id_task"], slot["n_prompt_tokens_cache"],
                slot["n_prompt_tokens_processed"]) == (5, 1000, 5000)
    finally:
        await sim.stop()


# -- Cerebras --------------------------------------------------------------------------------
async def test_cerebras_stream_order_and_usage_on_finish_chunk(cerebras, session):
    two_calls = Script(content="Reading.", reasoning="Need the file.",
                       tool_calls=({"name": "read_file", "arguments": TOOL_ARGS},
                                   {"name": "list_dir", "arguments": "{}"}))
    cerebras.script = two_calls
    resp, raw = await post(session, cerebras, cerebras_body(
        stream=True, stream_options={"include_usage": True}))
    assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    chunks = events(raw)
    assert "[DONE]" not in chunks  # the recordings end without it
    assert chunks[0]["choices"] == [{"delta": {"role": "assistant"}, "index": 0}]
    assert "".join(deltas(chunks, "reasoning")) == two_calls.reasoning
    assert deltas(chunks, "reasoning_content") == []
    assert "".join(deltas(chunks, "content")) == two_calls.content
    [calls] = deltas(chunks, "tool_calls")  # all complete calls in ONE chunk
    assert [c["function"] for c in calls] == [{"name": "read_file", "arguments": TOOL_ARGS},
                                              {"name": "list_dir", "arguments": "{}"}]
    assert [c["index"] for c in calls] == [0, 1] and all(c["type"] == "function" for c in calls)
    assert all(re.fullmatch(r"[0-9a-f]{9}", c["id"]) for c in calls)
    assert chunks[-2]["choices"] == [{"delta": {}, "index": 0}]
    finish = chunks[-1]
    assert finish["choices"] == [{"delta": {}, "finish_reason": "tool_calls", "index": 0}]
    assert all("finish_reason" not in c["choices"][0] for c in chunks[:-1])
    completion = (len(tokenize(two_calls.reasoning)) + len(tokenize(two_calls.content))
                  + TOOL_TOKENS + 1)  # "{}" is one fragment
    prompt = estimate_prompt_tokens(USER)
    assert finish["usage"] == {"prompt_tokens": prompt, "completion_tokens": completion,
                               "total_tokens": prompt + completion,
                               "prompt_tokens_details": {"cached_tokens": 0}}
    assert set(finish["time_info"]) == {"queue_time", "prompt_time", "completion_time",
                                        "total_time", "created"}
    assert len({c["id"] for c in chunks}) == 1
    for c in chunks:
        assert re.fullmatch(r"chatcmpl-[0-9a-f-]{36}", c["id"])
        assert re.fullmatch(r"fp_[0-9a-f]+", c["system_fingerprint"])
        assert c["object"] == "chat.completion.chunk" and c["model"] == "zai-glm-4.7"


async def test_cerebras_done_toggle_and_reasoning_off(session):
    sim = CerebrasSim(SCRIPT, tokens_per_s=None, send_done=True)
    await sim.start()
    try:
        _, raw = await post(session, sim, cerebras_body(stream=True, reasoning_effort="none"))
        chunks = events(raw)
        assert chunks[-1] == "[DONE]" and deltas(chunks, "reasoning") == []
        _, raw = await post(session, sim, cerebras_body(stream=True, disable_reasoning=True))
        assert deltas(events(raw), "reasoning") == []
    finally:
        await sim.stop()


async def test_cerebras_non_stream_uses_reasoning_field(cerebras, session):
    _, raw = await post(session, cerebras, cerebras_body(max_completion_tokens=4))
    data = orjson.loads(raw)
    message = data["choices"][0]["message"]
    assert message["reasoning"] == "Let me think about" and "reasoning_content" not in message
    assert data["choices"][0]["finish_reason"] == "length" and "tool_calls" not in message
    assert data["usage"]["completion_tokens"] == 4 and "time_info" in data
    assert data["system_fingerprint"].startswith("fp_")


async def test_cerebras_strict_validation(cerebras, session):
    history = USER + [{"role": "assistant", "content": "42", "reasoning_content": "hmm"}]
    resp, raw = await post(session, cerebras, cerebras_body(messages=history, top_k=40))
    assert resp.status == 400
    assert orjson.loads(raw) == {
        "message": "body.top_k: property 'body.top_k' is unsupported\n"
                   "messages.2.assistant.reasoning_content: property "
                   "'messages.2.assistant.reasoning_content' is unsupported",
        "type": "invalid_request_error", "param": "validation_error", "code": "wrong_api_format"}
    for extra in ({"cache_prompt": True}, {"chat_template_kwargs": {}}, {"store": False},
                  {"tools": [{"type": "function", "function": {"name": "f"}}],
                   "response_format": {"type": "json_object"}},
                  {"max_completion_tokens": 50000}):
        resp, raw = await post(session, cerebras, cerebras_body(**extra))
        assert resp.status == 400 and orjson.loads(raw)["code"] == "wrong_api_format", extra
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    resp, raw = await post(session, cerebras, cerebras_body(messages=image))
    assert resp.status == 400 and "error" not in orjson.loads(raw)
    ok = USER + [{"role": "assistant", "content": "42", "reasoning": "hmm"}]
    resp, _ = await post(session, cerebras, cerebras_body(
        messages=ok, reasoning_effort="none", clear_thinking=False, max_tokens=100))
    assert resp.status == 200
    assert [r.outcome for r in cerebras.requests][-1] == "completed"
    assert {r.outcome for r in cerebras.requests[:-1]} == {"rejected"}


async def test_cerebras_context_overflow(session):
    sim = CerebrasSim(PLAIN, tokens_per_s=None, context_window=10_000)
    await sim.start()
    try:
        long = [{"role": "user", "content": "x" * 8000}]  # 2000 tokens + default 8192
        resp, raw = await post(session, sim, cerebras_body(messages=long))
        assert resp.status == 400
        assert orjson.loads(raw) == {
            "message": "Please reduce the length of the messages or completion. Current length "
                       "is 10192 while limit is 10000", "type": "invalid_request_error",
            "param": "messages", "code": "context_length_exceeded"}
        resp, _ = await post(session, sim, cerebras_body(messages=long, max_completion_tokens=10))
        assert resp.status == 200
        sim.push_faults(Fault.context_overflow())
        resp, raw = await post(session, sim, cerebras_body(max_completion_tokens=10))
        assert resp.status == 400 and orjson.loads(raw)["code"] == "context_length_exceeded"
    finally:
        await sim.stop()


RATE_HEADERS = ("x-ratelimit-limit-requests-day", "x-ratelimit-limit-tokens-minute",
                "x-ratelimit-remaining-requests-day", "x-ratelimit-remaining-tokens-minute",
                "x-ratelimit-reset-requests-day", "x-ratelimit-reset-tokens-minute")


async def test_cerebras_rate_limit_headers_and_token_bucket(session):
    sim = CerebrasSim(PLAIN, tokens_per_s=None, rate_limit_tokens_per_minute=10_000,
                      rate_limit_requests_per_day=3)
    base = await sim.start()
    try:
        async with session.get(base + "/models") as resp:
            assert all(h in resp.headers for h in RATE_HEADERS)
            assert (await resp.json())["data"][0]["id"] == "zai-glm-4.7"
        resp, _ = await post(session, sim, cerebras_body(max_completion_tokens=6000))
        assert resp.headers["x-ratelimit-limit-tokens-minute"] == "10000"
        assert resp.headers["x-ratelimit-remaining-requests-day"] == "2"
        prompt = estimate_prompt_tokens(USER)
        assert int(resp.headers["x-ratelimit-remaining-tokens-minute"]) in range(
            10_000 - 6000 - prompt, 10_000 - 6000 - prompt + 5)
        assert float(resp.headers["x-ratelimit-reset-tokens-minute"]) > 0
        assert 0 < float(resp.headers["x-ratelimit-reset-requests-day"]) <= 86400
        # A stalled stream keeps its reservation; a second big request does not fit.
        sim.push_faults(Fault.stall_after(1))
        held = await session.post(sim.url + "/chat/completions",
                                  json=cerebras_body(stream=True, max_completion_tokens=6000))
        resp, raw = await post(session, sim, cerebras_body(max_completion_tokens=6000))
        assert resp.status == 429 and all(h in resp.headers for h in RATE_HEADERS)
        assert orjson.loads(raw) == {
            "message": "Tokens per minute limit exceeded - too many tokens processed.",
            "type": "too_many_tokens_error", "param": "quota", "code": "token_quota_exceeded"}
        held.close()
        await sim.wait_for_requests(3)
        resp, _ = await post(session, sim, cerebras_body(max_completion_tokens=100))
        assert resp.status == 200 and resp.headers["x-ratelimit-remaining-requests-day"] == "0"
        resp, raw = await post(session, sim, cerebras_body(max_completion_tokens=100))
        assert resp.status == 429 and orjson.loads(raw)["code"] == "request_quota_exceeded"
        # Logged when each request ENDS: the 429 finished before the held stream was dropped.
        assert [r.outcome for r in sim.requests] == [
            "completed", "rejected", "cancelled", "completed", "rejected"]
    finally:
        await sim.stop()


async def test_cerebras_auth_models_warming_and_retired(session):
    sim = CerebrasSim(PLAIN, tokens_per_s=None, api_key="sekrit",
                      retired_models=("zai-glm-4.6",))
    base = await sim.start()
    key = {"Authorization": "Bearer sekrit"}
    try:
        resp, raw = await post(session, sim, cerebras_body())
        assert resp.status == 401 and "message" in orjson.loads(raw)
        assert all(h in resp.headers for h in RATE_HEADERS)
        async with session.get(base + "/models") as resp:
            assert resp.status == 401
        async with session.get(base + "/tcp_warming") as resp:
            assert (resp.status, await resp.json()) == (200, {})
        async with session.get(base + "/models", headers=key) as resp:
            assert (await resp.json())["data"][0]["owned_by"] == "Cerebras"
        resp, raw = await post(session, sim, cerebras_body(model="zai-glm-4.6"), headers=key)
        assert resp.status == 404 and orjson.loads(raw) == {
            "message": "Model zai-glm-4.6 does not exist or you do not have access to it.",
            "type": "not_found_error", "param": "model", "code": "model_not_found"}
        resp, raw = await post(session, sim, cerebras_body(), headers=key)
        assert resp.status == 200 and sim.requests[-1].headers["Authorization"] == key[
            "Authorization"]
    finally:
        await sim.stop()


async def test_cerebras_continue_instruction_and_trailing_assistant(cerebras, session):
    cerebras.script = PLAIN
    partial = USER + [{"role": "assistant", "content": "one two three"}]
    cont = partial + [{"role": "user", "content": "Continue exactly where you stopped."}]
    _, raw = await post(session, cerebras, cerebras_body(messages=cont, stream=True))
    assert "".join(deltas(events(raw), "content")) == " four five six seven eight nine ten"
    _, raw = await post(session, cerebras, cerebras_body(messages=partial, stream=True))
    assert "".join(deltas(events(raw), "content")) == PLAIN.content  # no prefill semantics


async def test_cerebras_slow_first_token_after_role_chunk(session):
    sim = CerebrasSim(PLAIN, tokens_per_s=None)
    await sim.start()
    sim.push_faults(Fault.slow_first_token(0.3))
    try:
        t0 = time.monotonic()
        async with session.post(sim.url + "/chat/completions",
                                json=cerebras_body(stream=True)) as resp:
            role = await resp.content.readuntil(b"\n\n")
            t_role = time.monotonic() - t0
            first = await resp.content.readuntil(b"\n\n")
            t_first = time.monotonic() - t0
            await resp.read()
        assert b'"role":"assistant"' in role and b'"content":"one"' in first
        assert t_role < 0.2 and t_first >= 0.29
    finally:
        await sim.stop()


async def test_cerebras_error_event_cut_http_error_and_reset(session):
    sim = CerebrasSim(PLAIN, tokens_per_s=1000, send_done=True)
    await sim.start()
    sim.push_faults(Fault.error_event_after(2), Fault.cut_after(4),
                    Fault.http_error(429, retry_after=2.5), Fault.http_error(503),
                    Fault.reset_before_headers())
    try:
        _, raw = await post(session, sim, cerebras_body(stream=True))
        chunks = events(raw)
        assert "[DONE]" not in chunks and len(deltas(chunks, "content")) == 2
        assert chunks[-1] == {"error": {"id": "", "code": "server_error",
                                        "message": "Internal server error", "param": None,
                                        "type": "server_error"}, "status_code": 500}
        async with session.post(sim.url + "/chat/completions",
                                json=cerebras_body(stream=True)) as resp:
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
        resp, raw = await post(session, sim, cerebras_body(stream=True))
        assert resp.status == 429 and resp.headers["retry-after"] == "2.5"
        assert orjson.loads(raw)["code"] == "request_quota_exceeded"
        assert all(h in resp.headers for h in RATE_HEADERS)
        resp, raw = await post(session, sim, cerebras_body())
        assert resp.status == 503 and orjson.loads(raw) == {
            "message": "Service temporarily unavailable", "type": "service_unavailable_error",
            "param": None, "code": None}
        with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
            await post(session, sim, cerebras_body(stream=True))
        recs = await sim.wait_for_requests(5)
        assert [(r.fault, r.outcome, r.tokens_sent) for r in recs] == [
            ("error_event_after", "fault", 2), ("cut_after", "fault", 4),
            ("http_error", "fault", 0), ("http_error", "fault", 0),
            ("reset_before_headers", "fault", 0)]
    finally:
        await sim.stop()


async def test_stall_forever_ends_on_disconnect_and_stop_is_prompt(session):
    sim = CerebrasSim(PLAIN, tokens_per_s=None)
    await sim.start()
    sim.push_faults(Fault.stall_after(3), Fault.stall_after(0))
    try:
        resp = await session.post(sim.url + "/chat/completions", json=cerebras_body(stream=True))
        for _ in range(4):  # role + 3 tokens, then silence
            await resp.content.readuntil(b"\n\n")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 0.2)
        t_close = time.monotonic()
        resp.close()
        [rec] = await sim.wait_for_requests(1)
        assert rec.outcome == "cancelled" and rec.tokens_sent == 3
        assert rec.ended - t_close < 0.1
        stuck = await session.post(sim.url + "/chat/completions",
                                   json=cerebras_body(stream=True))
    finally:
        t_stop = time.monotonic()
        await sim.stop()
    assert time.monotonic() - t_stop < 0.5
    assert [r.outcome for r in sim.requests] == ["cancelled", "cancelled"]
    stuck.close()
