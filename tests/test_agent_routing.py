"""Routing that reads the agent: the learned scorer, escalation and the runaway guard, end to end
through the official openai client, the gateway and both simulators."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from config import ClassifierConfig
from tests import cline

LEARNED = {"classifier": ClassifierConfig()}  # the default method: the scorer shipped in the package


@pytest.fixture
async def learned(gateway_factory):
    return await gateway_factory(routing=LEARNED)


async def send(server, body: dict[str, Any] | list[dict[str, Any]], model: str = "glm-4.7") -> tuple[str, str]:
    """One non-streamed request; (x-glm-backend, x-glm-route-reason)."""
    body = {"model": model, "messages": body} if isinstance(body, list) else {**body, "model": model}
    async with openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="x", max_retries=0) as client:
        raw = await client.chat.completions.with_raw_response.create(**{"max_tokens": 50, **body})
    return raw.headers["x-glm-backend"], raw.headers["x-glm-route-reason"]


async def metric(http, server, name: str, **labels: str) -> float:
    async with http.get(server.make_url("/metrics")) as resp:
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


async def stats(http, server) -> dict[str, Any]:
    async with http.get(server.make_url("/stats")) as resp:
        return (await resp.json())["since_start"]


async def test_the_scorer_routes_by_scope_not_vocabulary(learned):
    # Big words, tiny named change: local. Plain words, open goal: cloud. Both shapes of Cline.
    assert await send(learned, cline.classic_first('Refactor: rename `get_usr` to `get_user` in auth/models.py')) == \
        ("local", "simple")
    assert await send(learned, cline.classic_first("Let customers pay in instalments.")) == ("cloud", "complex")
    assert await send(learned, cline.cli_first('Fix the typo "recieve" in README.md')) == ("local", "simple")
    assert await send(learned, cline.cli_first("Make the API multi-tenant.")) == ("cloud", "complex")


async def test_always_cloud_phrases_win_over_the_model(gateway_factory):
    server = await gateway_factory(routing={"classifier": ClassifierConfig(always_cloud=("readme",))})
    assert await send(server, cline.cli_first('Fix the typo "recieve" in README.md')) == ("cloud", "complex")


async def test_a_failing_classic_conversation_escalates_at_the_crossing_turn_and_stays(learned, http):
    messages = cline.classic_first('Fix the typo "recieve" in README.md')
    assert await send(learned, messages) == ("local", "simple")
    messages += cline.classic_turn("read_file", "README.md", "# Project\nWe recieve mail.")
    assert await send(learned, messages) == ("local", "sticky")
    messages += cline.classic_turn("replace_in_file", "README.md", cline.SEARCH_MISS)
    assert await send(learned, messages) == ("local", "sticky")  # one mistake: not yet
    messages += cline.classic_no_tool()
    assert await send(learned, messages) == ("cloud", "escalated")  # two in the last four turns
    messages += cline.classic_healthy(1) + cline.classic_healthy(2)
    assert await send(learned, messages) == ("cloud", "escalated")  # sticky: it stays
    assert await metric(http, learned, "glm_gateway_escalations_total", signal="no_tool_used") == 1
    window = await stats(http, learned)
    assert window["escalations"] == {"no_tool_used": 1} and window["route_reasons"]["escalated"] == 2


async def test_one_recovered_mistake_and_quoted_error_texts_never_escalate(learned):
    messages = cline.classic_first('Fix the typo "recieve" in README.md')
    await send(learned, messages)
    messages += cline.classic_turn("replace_in_file", "README.md", cline.SEARCH_MISS)
    for i in range(8):  # file contents and command output full of Cline's own error strings
        messages += cline.classic_healthy(i)
        assert await send(learned, messages) == ("local", "sticky")


async def test_a_pinned_conversation_never_escalates(gateway_factory):
    server = await gateway_factory()
    messages = cline.classic_first("fix the typo")
    for _ in range(4):
        messages += cline.classic_no_tool()
        assert await send(server, messages, model="glm-4.7-local") == ("local", "pinned")


async def test_a_cli_text_only_loop_is_escalated_once_then_stopped_within_the_cap(gateway_factory, http, cloud_sim):
    server = await gateway_factory(routing={**LEARNED, "max_conversation_usd": 0.5})
    body = cline.cli_first("Add a README.md that says hello")
    assert await send(server, body) == ("local", "simple")
    routes, stopped = [], None
    for i in range(20):
        body["messages"] += cline.cli_text_only(f"I added the README ({i}).")
        try:
            routes.append(await send(server, body))
        except openai.BadRequestError as exc:
            stopped = exc
            break
    # Escalated at the second text-only answer, then six more failing turns on the cloud.
    assert routes == [("local", "sticky"), ("cloud", "escalated")] + [("cloud", "escalated")] * 5
    assert stopped is not None and stopped.status_code == 400
    assert stopped.response.headers["x-should-retry"] == "false"
    error = stopped.body
    assert error["code"] == "conversation_stopped" and error["guard"] == "failing_after_escalation"
    assert error["message"].startswith("400 ") and "routing.guard.signals_after_escalation" in error["message"]
    # It stays stopped (a retry is refused too, at no model cost), and nothing was sent upstream.
    cloud_calls = len(cloud_sim.requests)
    with pytest.raises(openai.BadRequestError):
        await send(server, body)
    assert len(cloud_sim.requests) == cloud_calls
    window = await stats(http, server)
    spent = window["backends"]["cloud"]["cost_usd"]
    print(f"cloud spend of the runaway loop before the guard stopped it: ${spent:.6f}")
    assert 0 < spent < 0.5
    assert window["guard_stops"] == {"failing_after_escalation": 2}
    assert await metric(http, server, "glm_gateway_guard_stops_total", reason="failing_after_escalation") == 2
    # Other conversations are served as before.
    assert await send(server, cline.cli_first('Fix the typo "recieve" in README.md')) == ("local", "simple")


async def test_the_conversation_budget_stops_a_conversation(gateway_factory, http):
    server = await gateway_factory(routing={"max_conversation_usd": 1e-9})
    messages = cline.classic_first("Refactor the architecture")  # keywords: complex, the cloud
    assert await send(server, messages) == ("cloud", "complex")
    messages += cline.classic_healthy(1)
    with pytest.raises(openai.BadRequestError) as caught:
        await send(server, messages)
    assert caught.value.body["guard"] == "conversation_budget"
    assert "routing.max_conversation_usd" in caught.value.body["message"]


async def test_a_healthy_200_turn_session_is_never_stopped(gateway_factory, local_sim, http):
    local_sim.n_ctx = 65536  # the demo's and the config's window: the session fits
    server = await gateway_factory(routing=LEARNED)
    messages = cline.classic_first('Fix the typo "recieve" in README.md')
    assert await send(server, messages) == ("local", "simple")
    # Raw HTTP: the openai client spends ~0.1 s building each 400-message request.
    for i in range(200):
        messages += cline.classic_healthy(i)
        async with http.post(server.make_url("/v1/chat/completions"),
                             json={"model": "glm-4.7", "messages": messages, "max_tokens": 20}) as resp:
            assert resp.status == 200, await resp.text()
            assert (resp.headers["x-glm-backend"], resp.headers["x-glm-route-reason"]) == ("local", "sticky"), i


async def test_a_compaction_request_changes_nothing(learned):
    body = cline.cli_first("Add a README.md that says hello")
    await send(learned, body)
    body["messages"] += cline.cli_text_only("Done.")
    assert await send(learned, body) == ("local", "sticky")
    compaction = {k: v for k, v in cline.fixture("request-3-compaction.json").items()
                  if k not in ("stream_options", "reasoning")}
    # A summarising task, never scored as the transcript it carries; too big for the 8k local sim.
    assert await send(learned, {**compaction, "stream": False}) == ("cloud", "context")
    body["messages"] += cline.cli_text_only("Done again.")
    assert await send(learned, body) == ("cloud", "escalated")  # the count went on across it


async def test_stats_show_what_the_scorer_weighed(learned, http):
    await send(learned, cline.cli_first("Make the API multi-tenant."))
    await send(learned, cline.cli_first('Fix the typo "recieve" in README.md'))
    window = await stats(http, learned)
    assert window["classified_by"] == {"model": 2}
    complex_reasons, simple_reasons = window["scorer_reasons"]["complex"], window["scorer_reasons"]["simple"]
    assert any("tenant" in r for r in complex_reasons) and any("file" in r for r in simple_reasons)
    async with http.get(learned.make_url("/stats")) as resp:
        classifier = (await resp.json())["classifier"]
    assert classifier["method"] == "learned" and 0 < classifier["threshold"] < 1
    assert set(classifier["model"]["dev"]) == {"agreement", "complex_local", "simple_cloud"}
