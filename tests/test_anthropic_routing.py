"""Claude Code's requests through the Anthropic front get the same protection as Cline's: routing
reads its shape, escalation reads its tool errors, and a failover mid-answer gives one coherent
message. The caller is the official ``anthropic`` SDK; the backends are the simulators."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import anthropic
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backends.sim import Fault, Script
from gateway.anthropic.request import parse_messages_request
from routing.features import extract_features
from tests.test_anthropic import check_order, sse_events

FIXTURES = Path(__file__).parent / "fixtures" / "claude-code"
ANSWER = "The rounding happens per line; I changed it to round the total once, and the test passes now."
WATCH = {"first_token_timeout_s": 0.5, "stall_timeout_s": 0.3}
HEADERS = {"anthropic-version": "2023-06-01"}


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def internal(body: dict[str, Any]) -> dict[str, Any]:
    return parse_messages_request(json.dumps(body).encode(), "application/json").body


@pytest.fixture
def same_answer(local_sim, cloud_sim):
    local_sim.script = cloud_sim.script = Script(content=ANSWER)


async def stream(gateway, http, body: dict[str, Any]) -> tuple[int, list, dict]:
    async with http.post(gateway.make_url("/v1/messages?beta=true"), json={**body, "stream": True},
                         headers=HEADERS) as resp:
        return resp.status, sse_events(await resp.text()), dict(resp.headers)


def text_of(events: list) -> str:
    return "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")


# --- routing reads Claude Code's shape ----------------------------------------------------------

def test_the_task_is_the_users_words_not_the_reminders_or_the_system_prompt(token_counter):
    first = fixture("first-turn")
    features = extract_features(internal(first), token_counter)
    assert features.task_text.startswith("The unit price shown on invoices is sometimes off by a cent")
    assert "system-reminder" not in features.task_text and "claudeMd" not in features.task_text
    # Later turns: tool results and the reminder after them are not the task either.
    later = extract_features(internal(fixture("followup-tool-results")), token_counter)
    assert later.task_text == features.task_text


def test_the_conversation_key_survives_the_billing_headers_changing_cch(token_counter):
    one, two = fixture("first-turn"), fixture("first-turn")
    two["system"][0]["text"] = two["system"][0]["text"].replace("cch=", "cch=9")
    assert one["system"] != two["system"]
    keys = {extract_features(internal(b), token_counter).conversation_key for b in (one, two)}
    later = extract_features(internal(fixture("followup-tool-results")), token_counter).conversation_key
    assert len(keys) == 1 and later in keys
    assert "x-anthropic-billing-header" not in json.dumps(internal(one))  # nor does llama.cpp's cache see it


def test_sessions_of_one_project_with_a_big_claude_md_keep_their_own_keys(token_counter):
    # The first user message opens with the project's CLAUDE.md and ends with the task: two tasks
    # of the same length behind a 5 KB CLAUDE.md are two conversations, not one.
    keys = set()
    for task in ("Add a docstring to the parse_row helper in src/app/models.py",
                 "Find and fix the race condition in the job queue worker pool"):
        body = fixture("first-turn")
        reminder = body["messages"][0]["content"][0]
        reminder["text"] = reminder["text"].replace("# claudeMd", "# claudeMd\n" + "Use ruff. " * 500)
        body["messages"][0]["content"][-1]["text"] = task
        keys.add(extract_features(internal(body), token_counter).conversation_key)
    assert len(keys) == 2


async def test_haiku_background_work_goes_local_and_the_main_model_is_routed(gateway, http, cloud_sim):
    for name in ("haiku-title", "quota-probe"):
        async with http.post(gateway.make_url("/v1/messages"), json=fixture(name), headers=HEADERS) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["x-glm-backend"] == "local"
    hard = {"model": "claude-opus-4-5-20251101", "max_tokens": 512, "messages": [{"role": "user", "content": (
        "Refactor the architecture of the scheduler and debug the race condition in the worker pool")}]}
    async with http.post(gateway.make_url("/v1/messages"), json=hard, headers=HEADERS) as resp:
        assert (resp.headers["x-glm-backend"], resp.headers["x-glm-route-reason"]) == ("cloud", "complex")


def failing_turns(body: dict[str, Any], n: int, error: str) -> dict[str, Any]:
    """``body`` plus ``n`` more turns, each an Edit whose result is ``error`` (is_error)."""
    body = copy.deepcopy(body)
    for i in range(n):
        call = f"toolu_fail_{i}"
        body["messages"] += [
            {"role": "assistant", "content": [{"type": "tool_use", "id": call, "name": "Edit",
                                               "input": {"file_path": "a.py", "old_string": f"x{i}",
                                                         "new_string": "y"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call, "is_error": True,
                                          "content": error}]}]
    return body


def simple_first_turn() -> dict[str, Any]:
    body = fixture("first-turn")
    body["messages"][0]["content"][-1]["text"] = "Fix the typo in the README title."
    return body


async def test_tool_errors_escalate_and_a_failing_command_does_not(gateway, http, cloud_sim):
    # A simple task, served locally; then two failed edits in a row: the conversation escalates.
    start = simple_first_turn()
    status, events, headers = await stream(gateway, http, start)
    assert status == 200 and headers["x-glm-backend"] == "local"
    failed = failing_turns(start, 2, "<tool_use_error>String to replace not found in file.</tool_use_error>")
    status, events, headers = await stream(gateway, http, failed)
    assert (headers["x-glm-backend"], headers["x-glm-route-reason"]) == ("cloud", "escalated")
    check_order(events)
    # The same turns as failing test runs (Bash's non-zero exit): ordinary work, no escalation.
    other = simple_first_turn()
    other["messages"][0]["content"][-1]["text"] = "Fix the typo in the CHANGELOG heading."
    tests_fail = failing_turns(other, 3, "Exit code 1\n1 failed, 12 passed in 0.4s")
    status, events, headers = await stream(gateway, http, tests_fail)
    assert (headers["x-glm-backend"], headers["x-glm-route-reason"]) == ("local", "simple")
    # A pinned id never escalates, whatever its turns say.
    pinned = failing_turns({**simple_first_turn(), "model": "glm-4.7-local"}, 3,
                           "<tool_use_error>File has not been read yet.</tool_use_error>")
    status, events, headers = await stream(gateway, http, pinned)
    assert (headers["x-glm-backend"], headers["x-glm-route-reason"]) == ("local", "pinned")


# --- failover: one coherent message ----------------------------------------------------------------

@pytest.mark.parametrize("fault", [Fault.stall_after(8), Fault.cut_after(8), Fault.malformed_after(8)],
                         ids=["stall", "cut", "malformed"])
async def test_mid_answer_failover_gives_the_sdk_one_coherent_message(gateway_factory, local_sim, cloud_sim,
                                                                       same_answer, fault):
    gateway = await gateway_factory(local=WATCH, cloud=WATCH)
    local_sim.default_fault = fault
    async with anthropic.AsyncAnthropic(base_url=str(gateway.make_url("")), api_key="x", max_retries=0) as claude:
        async with claude.messages.stream(model="claude-haiku-4-5", max_tokens=512,
                                          messages=[{"role": "user", "content": "Fix the typo"}]) as s:
            message = await s.get_final_message()
            headers = s.response.headers
    assert [b.type for b in message.content] == ["text"] and message.content[0].text == ANSWER
    assert message.stop_reason == "end_turn" and headers["x-glm-backend"] == "local"
    assert local_sim.requests[0].fault == fault.name and cloud_sim.requests  # the cloud continued it


async def test_a_failed_continuation_ends_with_an_error_event_and_no_message_stop(gateway_factory, http,
                                                                                  local_sim, cloud_sim, same_answer):
    gateway = await gateway_factory(local=WATCH, cloud=WATCH)
    local_sim.default_fault = Fault.stall_after(8)
    cloud_sim.default_fault = Fault.cut_after(3)
    status, events, _ = await stream(gateway, http, {"model": "claude-haiku-4-5", "max_tokens": 512,
                                                     "messages": [{"role": "user", "content": "Fix the typo"}]})
    assert status == 200
    check_order(events, complete=False)
    error = events[-1][1]
    assert error["type"] == "error" and error["error"]["type"] in ("api_error", "overloaded_error", "timeout_error")
    assert text_of(events) and ANSWER.startswith(text_of(events)[:20])
    # The SDK raises instead of handing over a truncated message as if it were whole.
    async with anthropic.AsyncAnthropic(base_url=str(gateway.make_url("")), api_key="x", max_retries=0) as claude:
        with pytest.raises(anthropic.APIStatusError):
            async with claude.messages.stream(model="claude-haiku-4-5", max_tokens=512,
                                              messages=[{"role": "user", "content": "Fix the typo"}]) as s:
                await s.get_final_message()


async def test_pings_go_out_while_the_first_token_is_slow(gateway_factory, http, local_sim):
    gateway = await gateway_factory(server={"keepalive_s": 0.1})
    local_sim.push_faults(Fault.slow_first_token(0.5))
    status, events, _ = await stream(gateway, http, {"model": "glm-4.7-local", "max_tokens": 64,
                                                     "messages": [{"role": "user", "content": "hi"}]})
    names = [n for n, _ in events]
    assert status == 200 and names[0] == "message_start" and names[1] == "ping"
    # One with the commit, then one every keepalive_s (0.1 s) until the first token (0.5 s).
    assert names[:names.index("content_block_start")].count("ping") >= 3
    check_order(events)


async def test_accounting_records_the_api_on_the_ledger_stats_and_metrics(gateway, http, client):
    body = {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(2):
        async with http.post(gateway.make_url("/v1/messages"), json=body, headers=HEADERS) as resp:
            assert resp.status == 200
    await client.chat.completions.create(model="glm-4.7", messages=[{"role": "user", "content": "hi"}])
    async with http.get(gateway.make_url("/stats")) as resp:
        by_api = (await resp.json())["since_start"]["by_api"]
    assert by_api["anthropic"]["requests"] == 2 and by_api["openai"]["requests"] == 1
    async with http.get(gateway.make_url("/metrics")) as resp:
        families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
    by_label: dict[str, float] = {}
    for s in families["glm_gateway_requests"].samples:
        if s.name == "glm_gateway_requests_total":  # one sample per backend, reason and status
            by_label[s.labels["api"]] = by_label.get(s.labels["api"], 0.0) + s.value
    assert by_label == {"anthropic": 2.0, "openai": 1.0}


# --- the README's other failover behaviours, for Anthropic requests ---------------------------------

def ask(text: str = "Fix the typo", **extra: Any) -> dict[str, Any]:
    return {"model": "claude-haiku-4-5", "max_tokens": 2048, "messages": [{"role": "user", "content": text}], **extra}


async def test_a_failure_before_the_first_byte_restarts_unseen(gateway_factory, http, local_sim, same_answer):
    gateway = await gateway_factory(local=WATCH, cloud=WATCH)
    local_sim.default_fault = Fault.http_error(503)
    status, events, headers = await stream(gateway, http, ask())
    assert status == 200 and headers["x-glm-backend"] == "cloud" and text_of(events) == ANSWER
    check_order(events)


async def test_only_reasoning_sent_restarts_and_the_thinking_block_holds_both(gateway_factory, http, local_sim,
                                                                              cloud_sim):
    gateway = await gateway_factory(local=WATCH, cloud=WATCH)
    local_sim.script = Script(content=ANSWER, reasoning="Look at the rounding in line_total first.")
    cloud_sim.script = Script(content=ANSWER, reasoning="Rounding per line loses a cent.")
    local_sim.default_fault = Fault.stall_after(3)  # inside the reasoning
    status, events, _ = await stream(gateway, http, ask(thinking={"type": "enabled", "budget_tokens": 1024}))
    check_order(events)
    starts = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert starts == ["thinking", "text"] and text_of(events) == ANSWER
    thought = "".join(d["delta"].get("thinking", "") for n, d in events if n == "content_block_delta")
    assert thought == "Look at the\n\nRounding per line loses a cent."  # 3 local tokens, then the cloud's


async def test_a_tool_call_cut_in_flight_reaches_claude_whole_from_the_cloud(gateway_factory, local_sim, cloud_sim):
    gateway = await gateway_factory(local=WATCH, cloud=WATCH)
    calls = ({"name": "Write", "arguments": '{"file_path": "src/pricing.py", "content": "def total(): return 1"}'},)
    local_sim.script = cloud_sim.script = Script(content="I will write the file.", tool_calls=calls)
    local_sim.default_fault = Fault.cut_after(8)  # 5 content tokens, then inside the arguments
    tool = {"name": "Write", "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"},
                                                                              "content": {"type": "string"}}}}
    async with anthropic.AsyncAnthropic(base_url=str(gateway.make_url("")), api_key="x", max_retries=0) as claude:
        async with claude.messages.stream(**ask(tools=[tool])) as s:
            message = await s.get_final_message()
    assert [b.type for b in message.content] == ["text", "tool_use"] and message.stop_reason == "tool_use"
    assert message.content[0].text == "I will write the file."
    assert message.content[1].input == {"file_path": "src/pricing.py", "content": "def total(): return 1"}


async def test_a_prefill_whose_eta_misses_the_budget_switches_to_the_cloud_at_once(gateway_factory, http, local_sim):
    local_sim.n_ctx, local_sim.batch_tokens, local_sim.prefill_tokens_per_s = 200_000, 1000, 2_000
    gateway = await gateway_factory(local={"first_token_timeout_s": 10.0},
                                    routing={"strategy": "local_first", "max_local_ttft_s": 0.0})
    long = "Fix the typo in README.md.\n" + "lorem ipsum dolor " * 10_000  # 40,000 tokens: 20 s of prefill
    status, events, headers = await stream(gateway, http, {**ask(long), "model": "claude-sonnet-4-5"})
    assert (headers["x-glm-backend"], headers["x-glm-route-reason"]) == ("cloud", "slow_local")
    check_order(events)
    (abandoned,) = await local_sim.wait_for_requests(1)
    assert abandoned.outcome == "cancelled"


async def test_a_hedge_won_by_the_cloud_gives_one_message(gateway_factory, http, local_sim, same_answer):
    gateway = await gateway_factory(local={"first_token_timeout_s": 30}, routing={"hedge_after_s": 0.2})
    local_sim.default_fault = Fault.slow_first_token(3)
    status, events, headers = await stream(gateway, http, ask())
    assert headers["x-glm-backend"] == "cloud" and text_of(events) == ANSWER
    check_order(events)
    (local,) = await local_sim.wait_for_requests(1)
    assert local.outcome == "cancelled"


async def test_a_client_that_leaves_mid_answer_cancels_the_upstream(gateway_factory, http, local_sim):
    gateway = await gateway_factory()
    local_sim.default_fault = Fault.stall_after(5)
    resp = await http.post(gateway.make_url("/v1/messages"), json={**ask(), "stream": True}, headers=HEADERS)
    assert resp.status == 200
    await resp.content.readuntil(b"content_block_delta")
    resp.close()
    (local,) = await local_sim.wait_for_requests(1)
    assert local.outcome == "cancelled"


async def test_max_tokens_is_a_ceiling_in_the_context_check(gateway_factory, http, local_sim):
    # Claude Code sends its model's whole output ceiling as max_tokens. Taken as a need, every
    # turn would overflow a local context; the check keeps at most the answer reserve free, or
    # max_tokens if that is smaller.
    local_sim.n_ctx = 2048
    gateway = await gateway_factory(local={"context_window": 2048})
    ask_for = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "Fix the typo"}]}
    routes = []
    for max_tokens in (24, 32_000):
        async with http.post(gateway.make_url("/v1/messages"), json={**ask_for, "max_tokens": max_tokens},
                             headers=HEADERS) as resp:
            assert resp.status == 200, await resp.text()
            routes.append((resp.headers["x-glm-backend"], resp.headers["x-glm-route-reason"]))
    # 24 tokens fit 2,048; the reserve (4,096) does not, so the cloud, with the reason said.
    assert routes == [("local", "local_first"), ("cloud", "context")]
    local_sim.n_ctx = 65_536
    bigger = await gateway_factory(local={"context_window": 65_536})
    async with http.post(bigger.make_url("/v1/messages"), json={**ask_for, "max_tokens": 64_000},
                         headers=HEADERS) as resp:
        assert resp.headers["x-glm-backend"] == "local"  # 64,000 asked, 4,096 kept free: it fits
