"""Stall-proof streaming: watchdogs, mid-stream failover, tool-call safety and hedging, end to end
through the openai client against both simulators."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest

from backends import ManualClock
from backends.sim import Fault, Script
from tests.conftest import read_sse

ANSWER = ("The scheduler keeps a queue per worker, and each worker steals from its neighbour when its "
          "own queue is empty, which keeps all cores busy without a global lock around the queues. "
          "Stealing takes from the far end of the victim's queue, so the owner and the thief rarely touch "
          "the same task, and an idle worker parks after a few failed attempts instead of spinning.")
THINKING = "The user asks about the scheduler. I should explain work stealing briefly."
TASK = [{"role": "user", "content": "How does the scheduler spread work? Keep it short."}]
WATCH = {"first_token_timeout_s": 0.5, "stall_timeout_s": 0.3}


@pytest.fixture
def same_answer(local_sim, cloud_sim):
    """Both backends would give the same answer, so a continuation can be checked exactly."""
    local_sim.script = Script(content=ANSWER)
    cloud_sim.script = Script(content=ANSWER)


@pytest.fixture
async def watched_gateway(gateway_factory, same_answer):
    return await gateway_factory(local=WATCH, cloud=WATCH)


async def collect(server, http, body=None, **extra) -> tuple[list, dict]:
    body = body or {"model": "glm-4.7", "stream": True, "messages": TASK,
                    "stream_options": {"include_usage": True}}
    async with http.post(server.make_url("/v1/chat/completions"), json={**body, **extra}) as resp:
        assert resp.status == 200, await resp.text()
        events, _ = await read_sse(resp)
        return events, dict(resp.headers)


def text_of(events: list, field: str = "content") -> str:
    return "".join((e["choices"][0]["delta"].get(field) or "") for e in events
                   if isinstance(e, dict) and e.get("choices"))


def assert_one_coherent_stream(events: list) -> None:
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    chunks = events[:-1]
    assert not any("error" in e for e in chunks)
    assert len({e["id"] for e in chunks}) == 1
    assert len({e["model"] for e in chunks}) == 1
    assert sum(1 for e in chunks if e.get("choices") and "role" in e["choices"][0]["delta"]) == 1


async def test_slow_first_token_is_served_by_the_cloud_in_time(watched_gateway, http, local_sim, cloud_sim):
    local_sim.default_fault = Fault.slow_first_token(30)
    started = time.monotonic()
    events, headers = await collect(watched_gateway, http)
    took = time.monotonic() - started
    assert_one_coherent_stream(events)
    assert text_of(events) == ANSWER
    assert headers["x-glm-backend"] == "cloud" and headers["x-glm-route-reason"] == "fallback"
    # first_token_timeout_s plus the cloud's own time to answer (1000 tokens/s here)
    assert took < 0.5 + 0.5
    (local,) = local_sim.requests
    assert local.outcome == "cancelled"


async def test_stall_timeout_shorter_than_first_token_timeout_bites_on_time(gateway_factory, http, same_answer,
                                                                              local_sim):
    # The watchdog's deadline moves *earlier* at the first delta here: 30 s to start, 0.3 s per gap.
    server = await gateway_factory(local={"first_token_timeout_s": 30, "stall_timeout_s": 0.3}, cloud=WATCH)
    local_sim.default_fault = Fault.stall_after(5)
    started = time.monotonic()
    events, headers = await collect(server, http)
    assert time.monotonic() - started < 2
    assert_one_coherent_stream(events)
    assert text_of(events) == ANSWER


async def test_role_chunk_then_silence_restarts_without_a_second_role(gateway_factory, http, same_answer,
                                                                      local_sim, cloud_sim):
    server = await gateway_factory(local=WATCH, cloud=WATCH, routing={"strategy": "cloud_first"})
    cloud_sim.default_fault = Fault.slow_first_token(30)  # Cerebras sends headers and a role chunk first
    events, headers = await collect(server, http)
    assert_one_coherent_stream(events)
    assert text_of(events) == ANSWER
    assert headers["x-glm-backend"] == "cloud"  # committed with the role chunk...
    assert events[-2]["model_used"] == "local"  # ...but the answer is local's alone


@pytest.mark.parametrize("fault", [Fault.stall_after(20), Fault.cut_after(40), Fault.malformed_after(12),
                                   Fault.error_event_after(8)], ids=lambda f: f.name)
async def test_mid_answer_failure_is_continued_on_the_cloud(watched_gateway, http, local_sim, cloud_sim, fault):
    local_sim.default_fault = fault
    events, headers = await collect(watched_gateway, http)
    assert_one_coherent_stream(events)
    assert text_of(events) == ANSWER  # partial + continuation, nothing twice
    assert headers["x-glm-backend"] == "local"
    tail = [e for e in events[:-1] if e.get("model_used")]
    assert tail and all(e["model_used"] == "local+cloud" for e in tail)
    # The cloud was asked to continue, with the partial answer and an instruction.
    continuation = cloud_sim.requests[-1].body["messages"]
    assert continuation[-2]["role"] == "assistant" and ANSWER.startswith(continuation[-2]["content"])
    assert continuation[-1]["content"].startswith("Continue exactly where you stopped")
    # Usage adds up both backends: local's estimate plus the cloud's report.
    usage = events[-2]["usage"]
    cloud_usage = cloud_sim.requests[-1]
    assert usage["completion_tokens"] > cloud_usage.tokens_sent
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # ...and the gateway stays healthy: the next request is served normally.
    local_sim.default_fault = None
    events, headers = await collect(watched_gateway, http,
                                    body={"model": "glm-4.7-local", "stream": True, "messages": TASK})
    assert_one_coherent_stream(events)
    assert text_of(events) == ANSWER and headers["x-glm-backend"] == "local"


async def test_after_a_rescue_mid_answer_the_conversation_returns_to_local(watched_gateway, http, local_sim,
                                                                         cloud_sim):
    # One stall must not move the rest of the conversation to the paid cloud: local holds its
    # prefix, and the next turn goes back there.
    local_sim.push_faults(Fault.stall_after(10))
    events, headers = await collect(watched_gateway, http)
    assert text_of(events) == ANSWER and events[-2]["model_used"] == "local+cloud"
    turn = [*TASK, {"role": "assistant", "content": ANSWER}, {"role": "user", "content": "And then?"}]
    events, headers = await collect(watched_gateway, http, messages=turn)
    assert (headers["x-glm-backend"], headers["x-glm-route-reason"]) == ("local", "sticky")
    assert len(cloud_sim.requests) == 1


async def test_failover_waits_out_a_short_cloud_cooldown(gateway_factory, http, same_answer, local_sim, cloud_sim):
    # The cloud is cooling down for 0.8 s after a 429 when local breaks mid-answer: a pause
    # until the cooldown ends, then the continuation, rather than an error event.
    clock = ManualClock()  # the wait is on the gateway's clock: recorded, and no real time
    server = await gateway_factory(clock, local=WATCH, cloud=WATCH, routing={"max_attempts": 1})
    cloud_sim.push_faults(Fault.http_error(429, retry_after=0.8))
    async with http.post(server.make_url("/v1/chat/completions"),
                         json={"model": "glm-4.7-cloud", "messages": TASK}) as resp:
        assert resp.status == 429  # one attempt allowed: the cloud now cools down
    local_sim.default_fault = Fault.cut_after(10)
    events, headers = await collect(server, http)
    assert_one_coherent_stream(events)
    assert text_of(events) == ANSWER
    assert clock.slept == [pytest.approx(0.81)]  # it waited for the cloud's cooldown to end, then continued
    assert cloud_sim.requests[-1].fault is None


async def test_openai_client_sees_one_answer_across_a_stall(watched_gateway, local_sim, same_answer):
    local_sim.default_fault = Fault.stall_after(15)
    async with openai.AsyncOpenAI(base_url=str(watched_gateway.make_url("/v1")), api_key="x",
                                  max_retries=0) as client:
        stream = await client.chat.completions.create(model="glm-4.7", messages=TASK, stream=True)
        chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    assert len({c.id for c in chunks}) == 1


async def test_true_prefill_on_llama_strips_the_echo(gateway_factory, http, same_answer, local_sim, cloud_sim):
    server = await gateway_factory(local=WATCH, cloud=WATCH, routing={"strategy": "cloud_first"})
    cloud_sim.default_fault = Fault.stall_after(10)
    events, _ = await collect(server, http)
    assert_one_coherent_stream(events)
    assert text_of(events) == ANSWER
    sent = local_sim.requests[-1].body
    assert sent["messages"][-1]["role"] == "assistant"  # a trailing assistant message: true prefill
    assert sent["chat_template_kwargs"] == {"enable_thinking": False}


async def test_fallback_rejecting_prefill_gets_the_instruction_form(gateway_factory, http, same_answer,
                                                                    local_sim, cloud_sim):
    server = await gateway_factory(local=WATCH, cloud={**WATCH, "supports_prefill": True})
    cloud_sim.reject_prefill = True
    local_sim.default_fault = Fault.stall_after(20)
    events, _ = await collect(server, http)
    assert_one_coherent_stream(events)
    assert text_of(events) == ANSWER
    prefill, instruction = cloud_sim.requests
    assert prefill.outcome == "rejected" and prefill.body["messages"][-1]["role"] == "assistant"
    assert instruction.body["messages"][-1]["role"] == "user"


async def test_when_continuing_fails_too_the_error_names_the_real_failure(watched_gateway, http, local_sim,
                                                                         cloud_sim):
    local_sim.default_fault = Fault.stall_after(20)
    cloud_sim.default_fault = Fault.http_error(400)
    events, _ = await collect(watched_gateway, http)
    assert "[DONE]" not in events
    error = events[-1]["error"]
    assert error["message"].startswith("local backend: local sent no next token within 0.3s")
    assert "continuing on cloud failed" in error["message"]


async def test_only_reasoning_sent_restarts_and_keeps_thinking_apart(watched_gateway, http, local_sim, cloud_sim):
    local_sim.script = Script(content=ANSWER, reasoning=THINKING)
    cloud_sim.script = Script(content=ANSWER, reasoning="Work stealing, explained in one sentence.")
    local_sim.default_fault = Fault.stall_after(5)  # inside the reasoning
    events, _ = await collect(watched_gateway, http)
    assert_one_coherent_stream(events)
    local_part = " ".join(THINKING.split()[:5])
    assert text_of(events, "reasoning_content") == f"{local_part}\n\n{cloud_sim.script.reasoning}"
    assert text_of(events) == ANSWER
    assert cloud_sim.requests[-1].body["messages"] == TASK  # a restart, not a continuation


async def test_finish_without_done_is_finalised_at_once(watched_gateway, http, local_sim):
    local_sim.default_fault = Fault.no_done()  # finish_reason and usage, then the socket hangs
    started = time.monotonic()
    events, _ = await collect(watched_gateway, http)
    assert time.monotonic() - started < 0.3  # not a stall timeout, not a read timeout
    assert_one_coherent_stream(events)
    assert text_of(events) == ANSWER


async def test_failure_mid_tool_call_never_splices_arguments(watched_gateway, http, local_sim, cloud_sim):
    calls = ({"name": "write_to_file", "arguments": '{"path": "src/scheduler.py", "content": "def steal(): '
                                                    'return neighbour.pop()"}'},)
    local_sim.script = cloud_sim.script = Script(content="I will write the file.", tool_calls=calls)
    local_sim.default_fault = Fault.cut_after(8)  # 5 content tokens, then inside the arguments
    events, _ = await collect(watched_gateway, http)
    assert_one_coherent_stream(events)
    assert text_of(events) == "I will write the file."
    deltas = [c for e in events[:-1] if e.get("choices") for c in e["choices"][0]["delta"].get("tool_calls") or ()]
    assert len(deltas) == 1  # one complete call, from the cloud; no local fragments reached the client
    assert deltas[0]["function"] == calls[0]
    assert events[-2]["choices"] == [] or events[-2]["choices"][0]["finish_reason"] == "tool_calls"


async def test_non_streaming_requests_get_the_same_protection(watched_gateway, http, local_sim):
    local_sim.default_fault = Fault.stall_after(20)
    async with http.post(watched_gateway.make_url("/v1/chat/completions"),
                         json={"model": "glm-4.7", "messages": TASK}) as resp:
        assert resp.status == 200
        data = await resp.json()
    assert data["choices"][0]["message"]["content"] == ANSWER
    assert data["model_used"] == "local+cloud"
    assert data["object"] == "chat.completion"


async def test_disconnect_during_failover_cancels_both_upstreams(watched_gateway, http, local_sim, cloud_sim):
    local_sim.default_fault = Fault.stall_after(10)
    cloud_sim.default_fault = Fault.slow_first_token(30)
    resp = await http.post(watched_gateway.make_url("/v1/chat/completions"),
                           json={"model": "glm-4.7", "stream": True, "messages": TASK})
    await cloud_sim_request_started(cloud_sim)
    left = time.monotonic()
    resp.close()
    (cloud,) = await cloud_sim.wait_for_requests(1)
    (local,) = await local_sim.wait_for_requests(1)
    assert cloud.outcome == "cancelled" and cloud.ended - left < 0.1
    assert local.outcome == "cancelled"  # closed when the stall was detected


async def cloud_sim_request_started(cloud_sim, timeout: float = 5.0) -> None:
    """The failover request is in flight on the cloud (it is silent, so not yet recorded)."""
    deadline = time.monotonic() + timeout
    while not cloud_sim.live_requests():
        assert time.monotonic() < deadline, "the failover never reached the cloud"
        await asyncio.sleep(0.02)


async def test_hedge_won_by_the_cloud_cancels_local(gateway_factory, http, same_answer, local_sim, cloud_sim):
    server = await gateway_factory(local={"first_token_timeout_s": 30}, routing={"hedge_after_s": 0.2})
    local_sim.default_fault = Fault.slow_first_token(3)
    started = time.monotonic()
    events, headers = await collect(server, http)
    assert time.monotonic() - started < 1.0
    assert_one_coherent_stream(events)
    assert text_of(events) == ANSWER and headers["x-glm-backend"] == "cloud"
    (local,) = await local_sim.wait_for_requests(1)
    assert local.outcome == "cancelled"


async def test_hedge_lost_by_the_cloud_is_cancelled(gateway_factory, http, same_answer, local_sim, cloud_sim):
    server = await gateway_factory(local={"first_token_timeout_s": 30}, routing={"hedge_after_s": 0.2})
    local_sim.default_fault = Fault.slow_first_token(0.5)
    cloud_sim.default_fault = Fault.slow_first_token(5)
    events, headers = await collect(server, http)
    assert text_of(events) == ANSWER and headers["x-glm-backend"] == "local"
    (cloud,) = await cloud_sim.wait_for_requests(1)
    assert cloud.outcome == "cancelled"


async def test_no_hedge_when_local_answers_in_time(gateway_factory, http, same_answer, local_sim, cloud_sim):
    server = await gateway_factory(routing={"hedge_after_s": 0.5})
    events, headers = await collect(server, http)
    assert headers["x-glm-backend"] == "local" and text_of(events) == ANSWER
    assert not cloud_sim.requests and not cloud_sim.live_requests()


async def test_disconnect_during_a_hedge_cancels_both(gateway_factory, http, same_answer, local_sim, cloud_sim):
    server = await gateway_factory(local={"first_token_timeout_s": 30}, routing={"hedge_after_s": 0.1})
    local_sim.default_fault = Fault.slow_first_token(30)
    cloud_sim.default_fault = Fault.slow_first_token(30)
    task = asyncio.ensure_future(http.post(server.make_url("/v1/chat/completions"),
                                           json={"model": "glm-4.7", "stream": True, "messages": TASK}))
    await cloud_sim_request_started(cloud_sim)
    left = time.monotonic()
    task.cancel()
    (cloud,) = await cloud_sim.wait_for_requests(1)
    (local,) = await local_sim.wait_for_requests(1)
    assert cloud.outcome == local.outcome == "cancelled"
    assert max(cloud.ended, local.ended) - left < 0.1
