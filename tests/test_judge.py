"""The model judge, end to end: asked only in the doubtful band, on first turns, cached; its
timeout falls back to the scorer; its tokens are accounted; the client sees nothing of it."""

from __future__ import annotations

import openai
import pytest

from backends.sim import Fault
from backends.sim.common import JUDGE_SCHEMA
from config import ClassifierConfig, JudgeConfig
from routing.scorer import Scorer
from tests import cline
from tests.test_accounting import ledger_rows

DOUBTFUL = 'Fix the typo "recieve" in README.md'  # P = 0.475 under the model below: simple, in the band
CERTAIN = "Let customers pay with payments in instalments"  # "payments" pushes P to 0.99


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.json.gz"
    path.write_bytes(Scorer({"w:payments": 5.0}, -0.1, 0.5).to_bytes())
    return str(path)


@pytest.fixture
def judged(gateway_factory, model_file, tmp_path):
    async def start(judge: JudgeConfig = JudgeConfig(enabled=True), **sections):
        routing = {"classifier": ClassifierConfig(model_file=model_file), "judge": judge, **sections.pop("routing", {})}
        return await gateway_factory(routing=routing, ledger={"path": str(tmp_path / "ledger.db")}, **sections)
    return start


def judge_calls(sim) -> list:
    return [r for r in sim.requests if isinstance(r.body, dict)
            and (r.body.get("response_format") or {}).get("json_schema", {}).get("name") == JUDGE_SCHEMA]


async def ask(server, messages, stream: bool = False):
    async with openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="x", max_retries=0) as client:
        raw = await client.chat.completions.with_raw_response.create(model="glm-4.7", messages=messages,
                                                                      stream=stream)
        answer = raw.parse()
        text = "".join([c.choices[0].delta.content or "" async for c in answer if c.choices]) if stream \
            else answer.choices[0].message.content
    return raw.headers, text


def ledger(tmp_path) -> list:
    return ledger_rows(tmp_path / "ledger.db")


async def test_a_doubtful_task_is_judged_and_the_verdict_routes_it(judged, local_sim, cloud_sim, http, tmp_path):
    local_sim.judge = lambda task: "complex"
    server = await judged()
    headers, text = await ask(server, cline.classic_first(DOUBTFUL), stream=True)
    # The judge saw the task text alone, never the system prompt, and its verdict routed the task.
    (call,) = judge_calls(local_sim)
    assert [m["role"] for m in call.body["messages"]] == ["system", "user"]
    assert call.body["messages"][1]["content"] == DOUBTFUL
    assert cline.CLASSIC_SYSTEM not in call.body["messages"][0]["content"]
    assert (headers["x-glm-backend"], headers["x-glm-route-reason"]) == ("cloud", "complex")
    # The client sees the cloud's answer and nothing of the judge.
    assert text == cloud_sim.script.content and not any("judge" in k.lower() for k in headers)
    async with http.get(server.make_url("/stats")) as resp:
        judge = (await resp.json())["since_start"]["judge"]
    assert judge["calls"] == 1 and judge["overruled_scorer"] == 1 and judge["agreement_with_scorer"] == 0.0
    (row,) = ledger(tmp_path)
    assert (row["judge_backend"], row["judge_label"], row["class_source"]) == ("local", "complex", "judge")
    assert row["judge_prompt"] > 0 and row["judge_completion"] > 0 and row["judge_cost"] == 0.0


async def test_outside_the_band_the_judge_is_not_asked(judged, local_sim):
    server = await judged()
    headers, _ = await ask(server, cline.classic_first(CERTAIN))
    assert headers["x-glm-route-reason"] == "complex" and judge_calls(local_sim) == []


async def test_only_first_turns_are_judged_and_verdicts_are_cached(judged, local_sim):
    local_sim.judge = lambda task: "complex"
    server = await judged(routing={"sticky": False})  # so that a retried first turn is routed afresh
    messages = cline.classic_first(DOUBTFUL)
    for _ in range(2):  # a client retry of the first turn
        headers, _ = await ask(server, messages)
        assert headers["x-glm-route-reason"] == "complex"
    messages += cline.classic_healthy(1)
    await ask(server, messages)
    assert len(judge_calls(local_sim)) == 1


async def test_a_slow_judge_times_out_and_the_scorer_decides(judged, local_sim, cloud_sim, tmp_path):
    local_sim.push_faults(Fault.slow_first_token(5.0))  # the judge's request
    server = await judged(JudgeConfig(enabled=True, timeout_s=0.3))
    headers, text = await ask(server, cline.classic_first(DOUBTFUL))
    assert (headers["x-glm-backend"], headers["x-glm-route-reason"]) == ("local", "simple")  # the scorer's label
    assert text == local_sim.script.content
    (row,) = ledger(tmp_path)
    assert row["judge_label"] is None and 0.3 <= row["judge_s"] < 1.0 and row["class_source"] == "model"


async def test_an_unparsable_answer_falls_back_to_the_scorer(judged, local_sim, tmp_path):
    local_sim.judge = lambda task: "I think it is probably complex"
    server = await judged()
    headers, _ = await ask(server, cline.classic_first(DOUBTFUL))
    assert headers["x-glm-route-reason"] == "simple"
    (row,) = ledger(tmp_path)
    assert row["judge_label"] is None and row["class_source"] == "model"


async def test_a_cloud_judge_costs_money_against_savings_and_the_budget(judged, cloud_sim, tmp_path, http):
    cloud_sim.judge = lambda task: "simple"
    server = await judged(JudgeConfig(enabled=True, backend="cloud"))
    headers, _ = await ask(server, cline.classic_first(DOUBTFUL))
    assert (headers["x-glm-backend"], headers["x-glm-route-reason"]) == ("local", "simple")
    (row,) = ledger(tmp_path)
    assert row["judge_backend"] == "cloud" and row["judge_cost"] > 0
    assert row["savings"] == pytest.approx(row["local_at_cloud_price"] - row["local_cost"] - row["judge_cost"])
    async with http.get(server.make_url("/stats")) as resp:
        body = await resp.json()
    assert body["since_start"]["judge"]["cost_usd"] == pytest.approx(row["judge_cost"], abs=1e-6)
    assert body["budget"]["daily"]["spent_usd"] == pytest.approx(row["cloud_cost"] + row["judge_cost"], abs=1e-6)
