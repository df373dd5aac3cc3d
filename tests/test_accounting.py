"""Accounting end to end: usage from both simulators, cost and savings, budgets, the ledger, /stats
and /metrics, through the real gateway."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backends.sim import Fault
from tests.conftest import user
from tests.test_cli import env_with, free_port, wait_healthy

EASY = "Fix the typo in the readme"
HARD = "Refactor the architecture of the scheduler and debug the race condition"


async def chat(server, text: str, model: str = "glm-4.7", stream: bool = True, **extra) -> str:
    async with openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="x", max_retries=0) as client:
        if not stream:
            r = await client.chat.completions.create(model=model, messages=user(text), **extra)
            return r.model_used
        s = await client.chat.completions.create(model=model, messages=user(text), stream=True, **extra)
        chunks = [c async for c in s]
        return next(c.model_used for c in reversed(chunks) if getattr(c, "model_used", None))


async def get(http, server, path: str):
    async with http.get(server.make_url(path)) as resp:
        assert resp.status == 200
        return await (resp.json() if path != "/metrics" else resp.text())


def ledger_rows(path: Path) -> list[sqlite3.Row]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return db.execute("SELECT * FROM requests ORDER BY ts").fetchall()
    finally:
        db.close()


async def test_usage_cost_and_savings_from_both_backends(gateway_factory, http, local_sim, cloud_sim, tmp_path):
    server = await gateway_factory(ledger={"path": str(tmp_path / "l.db")})
    assert await chat(server, EASY) == "local"
    assert await chat(server, HARD) == "cloud"
    assert await chat(server, EASY + " again", stream=False) == "local"
    stats = (await get(http, server, "/stats"))["since_start"]
    local_reported = [r for r in local_sim.requests if r.outcome == "completed"]
    assert stats["requests"] == 3 and stats["requests_by_backend"] == {"local": 2, "cloud": 1}

    rows = ledger_rows(tmp_path / "l.db")
    cloud_row = next(r for r in rows if r["served_by"] == "cloud")
    # Cerebras put usage on its finish chunk: those exact numbers, not an estimate.
    assert not cloud_row["cloud_estimated"] and cloud_row["cloud_completion"] == cloud_sim.requests[0].tokens_sent
    expected_cost = ((cloud_row["cloud_prompt"] - cloud_row["cloud_cached"]) * 2.25
                     + cloud_row["cloud_cached"] * 2.25 + cloud_row["cloud_completion"] * 2.75) / 1e6
    assert cloud_row["cloud_cost"] == pytest.approx(expected_cost)
    assert cloud_row["savings"] == 0
    local_rows = [r for r in rows if r["served_by"] == "local"]
    # llama.cpp's usage came in its choices: [] chunk (streamed) and in the body (not streamed).
    assert [r["local_completion"] for r in local_rows] == [r.tokens_sent for r in local_reported]
    assert all(not r["local_estimated"] and r["local_cost"] == 0 for r in local_rows)
    for r in local_rows:
        at_cloud = ((r["local_prompt"] - r["local_cached"]) * 2.25 + r["local_cached"] * 2.25
                    + r["local_completion"] * 2.75) / 1e6
        assert r["savings"] == pytest.approx(at_cloud)
    assert stats["savings_usd"] == pytest.approx(sum(r["savings"] for r in local_rows), abs=1e-6)
    assert stats["backends"]["cloud"]["cost_usd"] == pytest.approx(cloud_row["cloud_cost"], abs=1e-6)
    assert 0 < stats["savings_pct"] < 100


async def test_local_price_reduces_savings(gateway_factory, http, tmp_path):
    server = await gateway_factory(local={"price_input_per_mtok": 1.0, "price_output_per_mtok": 1.0},
                                   ledger={"path": str(tmp_path / "l.db")})
    await chat(server, EASY)
    (row,) = ledger_rows(tmp_path / "l.db")
    assert row["local_cost"] > 0
    assert row["savings"] == pytest.approx(row["local_at_cloud_price"] - row["local_cost"])


async def test_failover_burning_cloud_tokens_is_cost_not_saving(gateway_factory, local_sim, tmp_path):
    server = await gateway_factory(local={"stall_timeout_s": 0.3}, ledger={"path": str(tmp_path / "l.db")})
    local_sim.default_fault = Fault.stall_after(5)
    assert await chat(server, EASY) == "local+cloud"
    (row,) = ledger_rows(tmp_path / "l.db")
    assert row["failover_reason"] == "stall" and row["failover_phase"] in ("mid_content", "mid_reasoning")
    assert row["local_estimated"] == 1 and row["local_completion"] > 0  # consumed, though never reported
    assert row["cloud_cost"] > 0 and row["savings"] == 0


async def test_cancelled_and_failed_requests_are_recorded(gateway_factory, http, local_sim, tmp_path):
    server = await gateway_factory(ledger={"path": str(tmp_path / "l.db")}, routing={"backoff_base_s": 0.01})
    local_sim.tokens_per_s = 50
    async with http.post(server.make_url("/v1/chat/completions"),
                         json={"model": "glm-4.7-local", "stream": True, "messages": user(EASY)}) as resp:
        await resp.content.readuntil(b"\n\n")
        await resp.content.readuntil(b"\n\n")
        resp.close()
    local_sim.default_fault = Fault.http_error(500)
    async with http.post(server.make_url("/v1/chat/completions"),
                         json={"model": "glm-4.7-local", "messages": user(EASY + " 2")}) as resp:
        assert resp.status == 500
    stats = (await get(http, server, "/stats"))["all_time"]
    assert stats["statuses"] == {"cancelled": 1, "error": 1}
    assert stats["errors"] == {"BackendUnavailable": 1}
    rows = ledger_rows(tmp_path / "l.db")
    cancelled = next(r for r in rows if r["status"] == "cancelled")
    assert cancelled["local_estimated"] == 1 and cancelled["local_prompt"] > 0


async def test_budget_cap_flips_routing_to_local(gateway_factory, http, cloud_sim, local_sim):
    server = await gateway_factory(budget={"daily_usd": 0.00001})  # one cloud answer spends it
    assert await chat(server, HARD) == "cloud"
    async with openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="x", max_retries=0) as client:
        raw = await client.chat.completions.with_raw_response.create(model="glm-4.7", messages=user(HARD + " 2"))
    assert raw.headers["x-glm-backend"] == "local" and raw.headers["x-glm-route-reason"] == "unavailable"
    health = await get(http, server, "/health")
    assert health["backends"]["cloud"]["over_budget"] == "daily cloud budget of $0.00 spent"
    assert health["budget"]["daily"]["exceeded"] is True
    stats = await get(http, server, "/stats")
    assert stats["budget"]["daily"]["remaining_usd"] == 0
    families = {f.name: f for f in text_string_to_metric_families(await get(http, server, "/metrics"))}
    remaining = {s.labels["period"]: s.value for s in families["glm_gateway_budget_remaining_usd"].samples}
    assert remaining == {"daily": 0.0}
    # Pinned to the cloud, nothing can serve: the error names the budget.
    async with http.post(server.make_url("/v1/chat/completions"),
                         json={"model": "glm-4.7-cloud", "messages": user()}) as resp:
        assert resp.status == 503
        assert "over budget (daily cloud budget" in (await resp.json())["error"]["message"]
    assert len(cloud_sim.requests) == 1
    assert (await get(http, server, "/stats"))["today"]["errors"] == {"NoBackendAvailable": 1}


async def test_a_lost_hedge_is_cloud_cost(gateway_factory, local_sim, cloud_sim, tmp_path):
    server = await gateway_factory(routing={"hedge_after_s": 0.1}, ledger={"path": str(tmp_path / "l.db")})
    local_sim.default_fault = Fault.slow_first_token(0.4)
    cloud_sim.default_fault = Fault.slow_first_token(5)
    assert await chat(server, EASY) == "local"
    (row,) = ledger_rows(tmp_path / "l.db")
    assert row["hedge"] == "local_won"
    assert row["cloud_estimated"] == 1 and row["cloud_prompt"] > 0 and row["cloud_cost"] > 0
    assert row["savings"] == 0


async def test_ledger_and_budget_survive_a_restart(aiohttp_server, local_sim, cloud_sim, token_counter, http,
                                                   tmp_path):
    from gateway.app import create_app
    from tests.conftest import make_config

    cfg = make_config(local_sim.url, cloud_sim.url, ledger={"path": str(tmp_path / "l.db")},
                      budget={"daily_usd": 0.00001})
    first = await aiohttp_server(create_app(cfg, token_counter=token_counter))
    await chat(first, HARD)
    await chat(first, EASY)
    before = (await get(http, first, "/stats"))["all_time"]
    await first.close()
    second = await aiohttp_server(create_app(cfg, token_counter=token_counter))
    stats = await get(http, second, "/stats")
    assert stats["all_time"] == before
    assert stats["since_start"]["requests"] == 0
    assert (await get(http, second, "/health"))["budget"]["daily"]["exceeded"] is True


async def test_stats_totals_match_a_recount_of_the_ledger(gateway_factory, http, local_sim, tmp_path):
    server = await gateway_factory(ledger={"path": str(tmp_path / "l.db")})
    for i in range(3):
        await chat(server, f"{EASY} {i}")
        await chat(server, f"{HARD} {i}", stream=False)
    stats = (await get(http, server, "/stats"))["all_time"]
    rows = ledger_rows(tmp_path / "l.db")
    assert stats["requests"] == len(rows) == 6
    for role in ("local", "cloud"):
        for kind in ("prompt", "completion", "cached", "reasoning"):
            assert stats["backends"][role]["tokens"][kind] == sum(r[f"{role}_{kind}"] for r in rows)
        assert stats["backends"][role]["cost_usd"] == pytest.approx(sum(r[f"{role}_cost"] for r in rows), abs=1e-6)
    assert stats["route_reasons"] == {"simple": 3, "complex": 3}
    assert stats["ttft_s"]["local"]["p50"] > 0 and stats["ttft_s"]["cloud"]["p99"] > 0


async def test_metrics_parse_and_rise(gateway_factory, http):
    server = await gateway_factory()
    await chat(server, EASY)
    text = await get(http, server, "/metrics")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = families["glm_gateway_requests"]
    ok = [s for s in requests.samples if s.name == "glm_gateway_requests_total"]
    assert [(s.labels, s.value) for s in ok] == [
        ({"backend": "local", "route_reason": "simple", "status": "ok", "api": "openai"}, 1.0)]
    await chat(server, HARD)
    families = {f.name: f for f in text_string_to_metric_families(await get(http, server, "/metrics"))}
    tokens = {(s.labels["backend"], s.labels["kind"]): s.value for s in families["glm_gateway_tokens"].samples
              if s.name.endswith("_total")}
    assert tokens[("cloud", "completion")] > 0 and tokens[("local", "prompt")] > 0
    for name in ("glm_gateway_cost_usd", "glm_gateway_time_to_first_token_seconds",
                 "glm_gateway_request_duration_seconds", "glm_gateway_backend_up", "glm_gateway_streams_in_flight",
                 "glm_gateway_ratelimit_remaining"):
        assert name in families, name


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus) is not installed")
async def test_metrics_pass_promtool(gateway_factory, http):
    server = await gateway_factory()
    await chat(server, EASY)
    text = await get(http, server, "/metrics")
    check = await asyncio.to_thread(subprocess.run, ["promtool", "check", "metrics"], input=text,
                                    capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


async def test_sigkill_loses_no_finished_request(tmp_path, http, local_sim):
    port = free_port()
    ledger = tmp_path / "ledger.sqlite3"
    config = tmp_path / "gw.yaml"
    config.write_text(f"""
listen: {{port: {port}}}
backends:
  local: {{base_url: "{local_sim.url}"}}
  cloud: {{enabled: false}}
logging: {{file: ""}}
ledger: {{path: "{ledger}"}}
""")
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env_with())
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_healthy(http, url, proc)
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as client:
            for i in range(5):
                stream = await client.chat.completions.create(model="glm-4.7", stream=True,
                                                              messages=user(f"{EASY} {i}"))
                _ = [c async for c in stream]
                await client.chat.completions.create(model="glm-4.7", messages=user(f"{EASY} again {i}"))
        os.kill(proc.pid, signal.SIGKILL)  # no shutdown, no flush: only what was committed survives
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(ledger_rows(ledger)) == 10


async def test_unusable_ledger_is_a_clear_startup_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    config = tmp_path / "gw.yaml"
    config.write_text(f'ledger: {{path: "{blocker}/ledger.sqlite3"}}\nlogging: {{file: ""}}\n'
                      f'listen: {{port: {free_port()}}}\n')
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "gateway.cli", "serve", "--config",
                                                   str(config)], capture_output=True, text=True, env=env_with(),
                                  timeout=30)
    assert out.returncode == 2
    assert "cannot open the ledger" in out.stderr and "Traceback" not in out.stderr


def test_budget_periods_roll_over_at_utc_midnight_and_month_start():
    import attrs

    from config import GatewayConfig
    from gateway.accounting import Budget

    now = [1793491199.0]  # 2026-10-31 23:59:59 UTC
    cfg = attrs.evolve(GatewayConfig(), budget=attrs.evolve(GatewayConfig().budget, daily_usd=1.0, monthly_usd=5.0))
    budget = Budget(cfg, lambda: now[0])
    budget.add(1.0)
    assert budget.exceeded() == "daily cloud budget of $1.00 spent"
    now[0] += 1  # 2026-11-01 00:00:00: a new day and a new month
    assert budget.exceeded() is None
    assert budget.report()["daily"]["spent_usd"] == 0 and budget.report()["monthly"]["spent_usd"] == 0
    for _ in range(5):
        budget.add(1.0)
        now[0] += 86400
    assert budget.exceeded() == "monthly cloud budget of $5.00 spent"
