"""Pools: two simulated llama.cpp servers and two simulated clouds behind one gateway, end to end.

Real simulator servers on loopback, the real app (create_app), the official openai client as
the caller. What is checked is where requests land (the ``x-glm-backend`` header and each
simulator's own request log), so a routing rule that silently stopped working fails here.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator

import aiohttp
import attrs
import openai
import pytest

from backends import ManualClock
from backends.sim import CerebrasSim, Fault, LlamaCppSim, Script, estimate_prompt_tokens
from config import GatewayConfig
from config.schema import CLOUD_DEFAULT, LOCAL_DEFAULT
from gateway.app import create_app
from tests.conftest import CLOUD_KEY

LOCALS, CLOUDS = ("spark-1", "spark-2"), ("cloud-1", "cloud-2")
# One answer everywhere, so a request continued on another backend can be checked exactly.
ANSWER = "Done: the typo in README.md is fixed and nothing else changed."
# Cline sends a long system prompt with every turn; ~1,000 prompt tokens (the sims count 4
# characters a token), so llama.cpp's prefill is long enough to be measured (>= 64 tokens).
SYSTEM = "You are Cline, a careful coding agent. " + "Follow the tool rules exactly. " * 130
SIMPLE = "Fix the typo in README.md ({})."  # simple by the keyword classifier: goes local first
COMPLEX = "Refactor the scheduler architecture and debug the race condition in worker {}."


@pytest.fixture
async def sims() -> AsyncIterator[dict[str, Any]]:
    pool: dict[str, Any] = {name: LlamaCppSim(Script(content=ANSWER), tokens_per_s=200) for name in LOCALS}
    pool.update({name: CerebrasSim(Script(content=ANSWER), tokens_per_s=1000, api_key=CLOUD_KEY) for name in CLOUDS})
    for sim in pool.values():
        await sim.start()
    yield pool
    for sim in pool.values():
        await sim.stop()  # a second stop (test 3 stops one itself) is harmless


def pool_config(sims: dict[str, Any], **routing: Any) -> GatewayConfig:
    """Four named backends; ``order`` ranks each tier (spark-1 and cloud-1 first)."""
    cfg = GatewayConfig()
    backends = {name: attrs.evolve(LOCAL_DEFAULT, base_url=sims[name].url, health_interval_s=0.2, order=i)
                for i, name in enumerate(LOCALS)}
    backends.update({name: attrs.evolve(CLOUD_DEFAULT, base_url=sims[name].url, api_key=CLOUD_KEY,
                                        health_interval_s=0.2, order=i) for i, name in enumerate(CLOUDS)})
    # The keyword classifier, as in conftest.make_config: retraining the scorer never moves these.
    routing_cfg = attrs.evolve(cfg.routing, classifier=attrs.evolve(cfg.routing.classifier, method="keywords"),
                               **routing)
    return attrs.evolve(cfg, backends=backends, routing=routing_cfg, ledger=attrs.evolve(cfg.ledger, path=":memory:"))


@pytest.fixture
async def start(aiohttp_server, sims, token_counter):
    """Start a gateway over the pool; returns (server, openai client). ``routing`` evolves routing."""
    clients: list[openai.AsyncOpenAI] = []

    async def start(clock: Any = None, **routing: Any) -> tuple[Any, openai.AsyncOpenAI]:
        app = create_app(pool_config(sims, **routing), token_counter=token_counter, clock=clock)
        server = await aiohttp_server(app)
        clients.append(openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="unused", max_retries=0))
        return server, clients[-1]

    yield start
    for client in clients:
        await client.close()


@pytest.fixture
async def gateway(start):
    return await start()


def turn(user: str) -> list[dict[str, str]]:
    """A conversation's first turn; its key (system + first user message) is unique per ``user``."""
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


async def ask(client: openai.AsyncOpenAI, messages: list[dict[str, str]], model: str = "glm-4.7") -> dict[str, Any]:
    """One streamed turn, as Cline sends it; returns who served it, the text and the usage chunk."""
    raw = await client.chat.completions.with_raw_response.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True})
    chunks = [c async for c in raw.parse()]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return {"backend": raw.headers["x-glm-backend"], "reason": raw.headers["x-glm-route-reason"],
            "text": text, "last": chunks[-1]}


def served(sims: dict[str, Any], names=LOCALS) -> dict[str, int]:
    return {name: sum(r.outcome == "completed" for r in sims[name].requests) for name in names}


async def until(condition, timeout: float = 5.0) -> None:
    """Wait for a setup step (a request reaching a simulator); never used to wait for a result."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "setup step never happened"
        await asyncio.sleep(0.01)


async def get_json(server, path: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(server.make_url(path)) as resp:
        assert resp.status == 200
        return await resp.json()


# --- 1. spreading by predicted time to first token ------------------------------------------------

async def test_a_slower_local_server_gets_fewer_requests(start, sims):
    sims["spark-1"].prefill_tokens_per_s = 4_000  # 1,000 tokens: 0.25 s before the first token
    sims["spark-2"].prefill_tokens_per_s = 40_000  # ten times faster
    server, client = await start()
    # One turn pinned to each teaches the gateway both prefill speeds (from llama.cpp's timings).
    for name in LOCALS:
        assert (await ask(client, turn(SIMPLE.format(f"warm-up {name}")), f"glm-4.7@{name}"))["backend"] == name
    speeds = {name: info["prefill_tps"] for name, info in (await get_json(server, "/health"))["backends"].items()}
    assert speeds["spark-2"] > 3 * speeds["spark-1"]
    # spark-1 is first by order, so only the predicted TTFT can send these to spark-2: 0.25 s on
    # spark-1 against 0.025 s times (1 + in flight) on spark-2, which stays ahead for all six.
    results = await asyncio.gather(*(ask(client, turn(SIMPLE.format(i))) for i in range(6)))
    assert [r["backend"] for r in results] == ["spark-2"] * 6
    assert all(r["text"] == ANSWER for r in results)


async def test_a_busier_local_server_gets_fewer_requests(start, sims):
    for name in LOCALS:  # equal servers, with a prefill slow enough to be measured steadily
        sims[name].prefill_tokens_per_s = 20_000
    server, client = await start()
    for name in LOCALS:
        await ask(client, turn(SIMPLE.format(f"warm-up {name}")), f"glm-4.7@{name}")
    # Two long answers occupy spark-1 (they never start until cancelled).
    sims["spark-1"].push_faults(Fault.slow_first_token(float("inf")), Fault.slow_first_token(float("inf")))
    busy = [asyncio.ensure_future(ask(client, turn(SIMPLE.format(f"busy {i}")), "glm-4.7@spark-1"))
            for i in range(2)]
    try:
        await until(lambda: sims["spark-1"].live_requests() == 2)
        # Equal speeds, but spark-1 predicts (1 + 2) times the wait: the next ones go to spark-2.
        results = [await ask(client, turn(SIMPLE.format(i))) for i in range(3)]
        assert [r["backend"] for r in results] == ["spark-2"] * 3
    finally:
        for task in busy:
            task.cancel()
        await asyncio.gather(*busy, return_exceptions=True)


async def test_a_busy_server_not_yet_measured_is_not_taken_for_instant(gateway, sims):
    server, client = gateway
    # Just after a (re)start: the first request is a long one on spark-1 (nothing measured yet).
    sims["spark-1"].push_faults(Fault.slow_first_token(float("inf")))
    long = asyncio.ensure_future(ask(client, turn(SIMPLE.format("long"))))
    try:
        await until(lambda: sims["spark-1"].live_requests() == 1)
        assert (await ask(client, turn(SIMPLE.format("first short"))))["backend"] == "spark-2"  # in-flight tie-break
        # spark-2 is now measured and idle; spark-1 still unmeasured, with one request in flight.
        results = [await ask(client, turn(SIMPLE.format(i))) for i in range(3)]
        assert [r["backend"] for r in results] == ["spark-2"] * 3
    finally:
        long.cancel()
        await asyncio.gather(long, return_exceptions=True)


async def test_equal_servers_share_concurrent_load(gateway, sims):
    server, client = gateway
    # Nothing measured yet: both predict an instant first token, so only the requests in flight
    # can tell them apart. Eight overlapping answers (about 60 ms each) must not pile on spark-1.
    results = await asyncio.gather(*(ask(client, turn(SIMPLE.format(i))) for i in range(8)))
    counts = {name: sum(r["backend"] == name for r in results) for name in LOCALS}
    assert min(counts.values()) >= 3, counts
    assert served(sims) == counts  # the header tells the truth: each sim saw what it is credited with


# --- 2. sticky conversations and llama.cpp's prompt cache ------------------------------------------

async def test_a_conversation_returns_to_the_server_that_holds_its_prefix(start, sims):
    sims["spark-1"].prefill_tokens_per_s = 5_000  # spark-1 is the slower server...
    sims["spark-2"].prefill_tokens_per_s = 50_000
    server, client = await start()
    first = turn(SIMPLE.format("sticky"))
    one = await ask(client, first)
    assert one["backend"] == "spark-1"  # nothing measured yet: order breaks the tie
    other = await ask(client, turn(SIMPLE.format("another conversation")))
    assert other["backend"] == "spark-2"  # unmeasured counts as instant; now both are measured
    # ...so a new conversation of this size would go to spark-2 now; this one's second turn (as
    # Cline sends it: the same start, the answer, a new message) goes back to its prefix.
    second = [*first, {"role": "assistant", "content": one["text"]},
              {"role": "user", "content": "Now fix the same typo in docs/index.md."}]
    two = await ask(client, second)
    assert (two["backend"], two["reason"]) == ("spark-1", "sticky")
    assert sims["spark-1"].requests[-1].body["messages"][:2] == first
    # llama.cpp reused the whole first turn's prompt (system prompt *and* first user message).
    timings = two["last"].model_extra.get("timings") or {}
    assert timings.get("cache_n", 0) >= (len(SYSTEM) + len(first[1]["content"])) // 4 - 1, timings
    assert two["last"].usage.prompt_tokens_details.cached_tokens == timings["cache_n"]


# --- 3. a local server going away mid-run --------------------------------------------------------

async def test_stopping_a_local_server_fails_no_request(gateway, sims):
    server, client = gateway
    a, b, c = (turn(SIMPLE.format(f"conversation {x}")) for x in "abc")
    before = [await ask(client, a), await ask(client, b), await ask(client, c, "glm-4.7@spark-1")]
    # Both in use; conversations a and c are now sticky to spark-1, b to spark-2.
    assert [r["backend"] for r in before] == ["spark-1", "spark-2", "spark-1"]
    # a's next turn is mid-answer on spark-1 (stalled after 3 tokens) when spark-1 is stopped:
    # it must still end with the whole answer (continued elsewhere).
    sims["spark-1"].push_faults(Fault.stall_after(3))
    clouds_before = {name: len(sims[name].requests) for name in CLOUDS}
    cut = asyncio.ensure_future(ask(client, [*a, {"role": "assistant", "content": ANSWER},
                                             {"role": "user", "content": "And in CHANGELOG.md?"}]))
    await until(lambda: sims["spark-1"].live_requests() == 1)
    await sims["spark-1"].stop()
    # At once: c's next turn, sticky to spark-1, moves to the rest of the local tier, not to a
    # cloud (refused there before any byte, or skipped if a health probe already saw it down).
    moved = await ask(client, [*c, {"role": "assistant", "content": ANSWER},
                               {"role": "user", "content": "And in docs/faq.md?"}])
    assert (await cut)["text"] == ANSWER
    # (After something reached the client, a failover goes to the other tier by design and the
    # conversation then sticks to that cloud: so a's later turns are not checked here.)
    # Then sequential turns and a concurrent burst: none fails, spark-2 takes them all.
    after = [moved, *[await ask(client, turn(SIMPLE.format(f"after {i}"))) for i in range(3)]]
    after += await asyncio.gather(*(ask(client, turn(SIMPLE.format(f"burst {i}"))) for i in range(4)))
    assert [r["backend"] for r in after] == ["spark-2"] * 8
    assert all(r["text"] == ANSWER for r in after)
    # The clouds saw only a's cut turn (continued there), nothing of the turns after the stop.
    assert all(any(m["content"] == "And in CHANGELOG.md?" for m in r.body["messages"]) for name in CLOUDS
               for r in sims[name].requests[clouds_before[name]:])


# --- 4. a Cerebras 429 ------------------------------------------------------------------------------

@pytest.mark.parametrize("fault", [
    pytest.param(Fault.http_error(429, retry_after=1.5), id="retry-after"),
    # Cerebras's own 429 (request_quota_exceeded, no retry-after; its x-ratelimit-* headers show
    # no exhausted window) should cool down for routing.cooldown_s.
    pytest.param(Fault.http_error(429), id="no-retry-after"),
])
async def test_a_cerebras_429_moves_cloud_traffic_to_the_second_cloud(start, sims, fault):
    # A 429 without retry-after cools down for routing.cooldown_s. The gateway's clock is a manual
    # one, so the cooldown's end is a step of the test's, not a wait.
    clock = ManualClock()
    server, client = await start(clock, cooldown_s=1.5)
    one = await ask(client, turn(COMPLEX.format(0)))
    assert (one["backend"], one["reason"]) == ("cloud-1", "complex")  # the chain's first
    sims["cloud-1"].push_faults(fault)
    hit = await ask(client, turn(COMPLEX.format(1)))
    # The same request, served by the next link of the chain, before any byte reached the client.
    assert (hit["backend"], hit["reason"], hit["text"]) == ("cloud-2", "fallback", ANSWER)
    assert (await get_json(server, "/health"))["backends"]["cloud-1"]["cooldown_s"] >= 1.0
    # While cloud-1 cools down, complex tasks and the cloud-tier id go straight to cloud-2.
    clock.advance(1.4)
    later = [await ask(client, turn(COMPLEX.format(2))), await ask(client, turn(SIMPLE.format(3)), "glm-4.7-cloud")]
    assert [r["backend"] for r in later] == ["cloud-2", "cloud-2"]
    assert [r.outcome for r in sims["cloud-1"].requests] == ["completed", "fault"]  # not asked again
    # When the cooldown is over, the chain's order holds again.
    clock.advance(0.2)
    assert (await ask(client, turn(COMPLEX.format(4))))["backend"] == "cloud-1"


# --- 5. per-backend model ids ---------------------------------------------------------------------

async def test_a_backend_model_id_pins_that_backend(gateway, sims):
    server, client = gateway
    models = {m.id: m.model_extra for m in (await client.models.list()).data}
    assert set(models) == {"glm-4.7", "glm-4.7-local", "glm-4.7-cloud", *(f"glm-4.7@{n}" for n in LOCALS + CLOUDS)}
    # Each entry says what it pins: a backend by name, a tier, or nothing (routed).
    assert models["glm-4.7@cloud-2"] == {"backend": "cloud-2", "pins": "backend"}
    assert models["glm-4.7-local"] == {"backend": "local", "pins": "tier"}
    # Each pin beats what routing would do: a complex task on the second local server, a simple
    # one on the second cloud, and the next turn of a conversation pinned away from its server.
    pinned = [("glm-4.7@spark-2", COMPLEX.format("p")), ("glm-4.7@cloud-2", SIMPLE.format("p")),
              ("glm-4.7@cloud-1", SIMPLE.format("q"))]
    for model, task in pinned:
        r = await ask(client, turn(task), model)
        assert (r["backend"], r["reason"], r["text"]) == (model.split("@")[1], "pinned", ANSWER)
    first = turn(SIMPLE.format("moved"))
    assert (await ask(client, first, "glm-4.7@spark-2"))["backend"] == "spark-2"
    moved = await ask(client, [*first, {"role": "assistant", "content": ANSWER},
                               {"role": "user", "content": "Again"}], "glm-4.7@spark-1")
    assert moved["backend"] == "spark-1"
    assert served(sims, LOCALS + CLOUDS) == {"spark-1": 1, "spark-2": 2, "cloud-1": 1, "cloud-2": 1}
    with pytest.raises(openai.NotFoundError):
        await ask(client, turn("x"), "glm-4.7@spark-3")


# --- 6. /health and /stats per backend -------------------------------------------------------------

async def test_health_and_stats_report_every_backend(gateway, sims):
    server, client = gateway
    for name in LOCALS + CLOUDS:
        await ask(client, turn(SIMPLE.format(name)), f"glm-4.7@{name}")
    health = await get_json(server, "/health")
    assert {name: info["tier"] for name, info in health["backends"].items()} == {
        "spark-1": "local", "spark-2": "local", "cloud-1": "cloud", "cloud-2": "cloud"}
    assert health["tiers"] == {"local": list(LOCALS), "cloud": list(CLOUDS)}
    stats = (await get_json(server, "/stats"))["since_start"]
    assert stats["requests_by_backend"] == dict.fromkeys(LOCALS + CLOUDS, 1)
    for name in LOCALS + CLOUDS:
        (seen,) = sims[name].requests
        entry = stats["by_backend"][name]
        # Tokens as each upstream reported them (the sims count 4 characters a prompt token).
        assert entry["tier"] == ("local" if name in LOCALS else "cloud") and entry["requests"] == 1
        assert entry["tokens"]["prompt"] == estimate_prompt_tokens(seen.body["messages"])
        assert entry["tokens"]["completion"] == seen.tokens_sent > 0
        assert (entry["cost_usd"] > 0) == (name in CLOUDS)
    # Live, per server: its tier, and for the llama.cpp ones the prefill speed their timings taught.
    servers = (await get_json(server, "/stats"))["servers"]
    assert {name: s["tier"] for name, s in servers.items()} == {name: info["tier"] for name, info in
                                                              health["backends"].items()}
    assert all(servers[name]["prefill_tps"] for name in LOCALS) and servers["spark-1"]["in_flight"] == 0


async def test_health_shows_the_slots_llama_cpp_reports_busy(gateway, sims):
    # A generation holds one of spark-1's slots (its /slots says is_processing) while the health
    # probe reads them; the clouds have no such endpoint.
    server, client = gateway
    sims["spark-1"].default_fault = Fault.stall_after(3, seconds=3.0)
    busy = asyncio.ensure_future(ask(client, turn(SIMPLE.format("slot")), "glm-4.7@spark-1"))
    try:
        deadline = time.monotonic() + 5
        while True:
            backends = (await get_json(server, "/health"))["backends"]
            if backends["spark-1"]["slots_busy"]:
                break
            assert time.monotonic() < deadline, backends["spark-1"]
            await asyncio.sleep(0.05)
        assert (backends["spark-1"]["slots_busy"], backends["spark-1"]["slots_total"]) == (1, 4)
        assert backends["cloud-1"]["slots_busy"] is None and backends["cloud-1"]["slots_total"] is None
        servers = (await get_json(server, "/stats"))["servers"]
        assert servers["spark-1"]["slots_total"] == 4
    finally:
        busy.cancel()
        await asyncio.gather(busy, return_exceptions=True)
