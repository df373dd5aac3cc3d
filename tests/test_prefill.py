"""Prefill-aware routing, pure parts: the watchdog reading llama.cpp's prompt_progress, learned
speeds and the predicted time to first token, and the slow_local rule. No sockets, no sleeps."""

from __future__ import annotations

import time
from typing import Any

import attrs
import pytest

from backends import BackendUnavailable, Chunk, ManualClock, Progress
from config.schema import CLOUD_DEFAULT, LOCAL_DEFAULT, RoutingConfig
from routing.classifier import SIMPLE, Classification
from routing.features import Features
from routing.policy import RouteDecision, decide
from routing.speed import Speed
from routing.state import BackendView
from routing.watch import watched
from tests.conftest import read_sse


class Fake:
    name = "local"

    def __init__(self, **cfg: Any) -> None:
        self.cfg = attrs.evolve(LOCAL_DEFAULT, **cfg)


def role(progress: Progress, silent: bool = True) -> Chunk:
    return Chunk({"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]}, None, progress, silent)


def content(text: str) -> Chunk:
    return Chunk({"choices": [{"index": 0, "delta": {"content": text}}]})


async def relay(backend: Fake, chunks: list[Chunk]) -> list[Chunk]:
    async def upstream():
        for chunk in chunks:
            yield chunk
    return [c async for c in watched(backend, upstream(), clock=ManualClock())]


async def test_a_prefill_whose_eta_misses_the_budget_fails_at_once():
    # 1,000 of 100,000 tokens in 1 s: 99 s to go against a 30 s budget. No waiting for the timeout.
    with pytest.raises(BackendUnavailable) as caught:
        await relay(Fake(), [role(Progress(100_000, 0, 0, 40)), role(Progress(100_000, 0, 1_000, 1_000)),
                             content("never")])
    assert caught.value.failure == "slow_prefill" and "100000-token prompt" in caught.value.message


async def test_with_nowhere_else_to_go_a_slow_prefill_is_waited_for():
    async def upstream():
        yield role(Progress(100_000, 0, 1_000, 1_000))  # 99 s to go against a 30 s budget
        yield content("slow, but an answer")

    chunks = [c async for c in watched(Fake(), upstream(), switchable=lambda: False, clock=ManualClock())]
    assert chunks[-1].data["choices"][0]["delta"] == {"content": "slow, but an answer"}


async def test_a_prefill_that_fits_is_relayed_and_its_progress_is_not():
    chunks = await relay(Fake(), [role(Progress(10_000, 2_000, 2_000, 30)), role(Progress(10_000, 2_000, 6_000, 2_000)),
                                  role(Progress(10_000, 2_000, 10_000, 4_000)), content("Hi"), content("!")])
    # The first progress chunk's role is kept for the client, just before the first content.
    assert [c.data["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": None}, {"content": "Hi"}, {"content": "!"}]
    assert not any(c.silent for c in chunks)


async def test_cached_tokens_do_not_count_as_speed():
    # 90,000 cached, then 1,000 processed in 1 s: 9,000 left at 1,000/s is 9 s, within budget.
    chunks = await relay(Fake(), [role(Progress(100_000, 90_000, 91_000, 1_000)), content("ok")])
    assert len(chunks) == 2


async def test_an_abandon_rule_can_switch_earlier():
    async def upstream():
        yield role(Progress(20_000, 0, 1_000, 1_000))  # 19 s to go: within 30 s
        yield content("late")

    with pytest.raises(BackendUnavailable, match="elsewhere"):
        [c async for c in watched(Fake(), upstream(), lambda eta: "elsewhere is faster" if eta > 10 else None,
                                 clock=ManualClock())]


async def test_progress_the_client_asked_for_is_relayed():
    chunks = await relay(Fake(), [role(Progress(100, 0, 50, 10), silent=False), content("x")])
    assert chunks[0].progress == Progress(100, 0, 50, 10) and len(chunks) == 2


def test_speed_learns_from_timings_and_predicts_ttft():
    speed = Speed()
    assert speed.predict_ttft(10_000, 0) is None
    speed.observe_timings({"prompt_per_second": 500.0, "predicted_per_second": 40.0, "prompt_n": 2_500, "cache_n": 0})
    assert speed.predict_ttft(10_000, 0) == pytest.approx(20.0)
    assert speed.predict_ttft(10_000, 1) == pytest.approx(40.0)  # a second request shares the batch
    # A warm-cache turn (a few tokens prefilled) says nothing about prefill speed, only about reuse.
    speed.observe_timings({"prompt_per_second": 5.0, "predicted_per_second": 40.0, "prompt_n": 3, "cache_n": 9_000})
    assert speed.prefill_tps == 500.0 and speed.cache_ratio == pytest.approx(0.7 * 0 + 0.3 * 9000 / 9003)
    cloud = Speed()
    cloud.observe_ttft(0.4)
    assert cloud.predict_ttft(10_000, 3) == 0.4  # no prefill speed reported: the measured TTFT


FEATURES = Features(task_text="t", task_tokens=1, prompt_tokens=50_000, code_blocks=0, has_tools=False,
                    has_images=False, max_tokens=None, depth=0, conversation_key="k")


def views(local_ttft: float | None) -> dict[str, BackendView]:
    return {"local": BackendView("local", LOCAL_DEFAULT.context_window, False, "ok", tier="local",
                                 predicted_ttft_s=local_ttft),
            "cloud": BackendView("cloud", CLOUD_DEFAULT.context_window, False, "ok", tier="cloud",
                                 predicted_ttft_s=0.5)}


def test_a_prompt_predicted_too_slow_for_local_goes_to_the_cloud_before_it_is_sent():
    easy = Classification(SIMPLE, 0.1, ())
    d = decide(FEATURES, easy, views(100.0), RoutingConfig(), strategy="complexity", sticky=None, now=0)
    assert isinstance(d, RouteDecision) and (d.primary, d.reason) == ("cloud", "slow_local")
    assert d.reserve == ("local",)  # a slow answer still beats none if the cloud fails
    assert decide(FEATURES, easy, views(10.0), RoutingConfig(), strategy="complexity", sticky=None,
                  now=0).primary == "local"
    assert decide(FEATURES, easy, views(100.0), RoutingConfig(max_local_ttft_s=0), strategy="complexity",
                  sticky=None, now=0).primary == "local"  # off
    # Pinned to local: slow is still better than nothing.
    assert decide(FEATURES, easy, views(100.0), RoutingConfig(), strategy="local_only", sticky=None,
                  now=0).primary == "local"


# --- end to end: the llama.cpp simulator's prefill and return_progress ---------------------------

def long_prompt(tokens: int) -> list[dict[str, Any]]:
    # The simulator counts 4 characters a token.
    return [{"role": "user", "content": "Fix the typo in README.md.\n" + "lorem ipsum dolor " * (tokens // 4)}]


async def post(http, server, body: dict[str, Any]) -> tuple[dict[str, str], list[Any], float]:
    started = time.monotonic()
    async with http.post(server.make_url("/v1/chat/completions"), json=body) as resp:
        assert resp.status == 200, await resp.text()
        events, _ = await read_sse(resp)
        return dict(resp.headers), events, time.monotonic() - started


LOCAL_FIRST = {"strategy": "local_first"}  # whatever the classifier thinks of these long prompts


@pytest.fixture
def prefilling(local_sim):
    local_sim.n_ctx = 200_000
    local_sim.batch_tokens = 1000
    return local_sim


async def test_a_slow_prefill_that_fits_is_not_failed_over_and_its_progress_is_not_relayed(
        gateway_factory, http, prefilling):
    prefilling.prefill_tokens_per_s = 5_000  # 4,000 tokens: 0.8 s of prefill, in 8 progress batches
    server = await gateway_factory(local={"first_token_timeout_s": 5.0, "stall_timeout_s": 0.5}, routing=LOCAL_FIRST)
    headers, events, _ = await post(http, server, {"model": "glm-4.7", "stream": True, "messages": long_prompt(4_000)})
    assert (headers["x-glm-backend"], headers["x-glm-route-reason"]) == ("local", "local_first")
    assert events[-1] == "[DONE]" and not any("prompt_progress" in e for e in events if isinstance(e, dict))
    (seen,) = prefilling.requests
    assert seen.body["return_progress"] is True and seen.outcome == "completed"
    # Asked for, it is relayed.
    _, events, _ = await post(http, server, {"model": "glm-4.7-local", "stream": True, "return_progress": True,
                                             "messages": long_prompt(4_000)})
    assert sum(1 for e in events if isinstance(e, dict) and "prompt_progress" in e) >= 2


async def test_a_prefill_whose_eta_misses_the_budget_switches_to_the_cloud_at_once(gateway_factory, http,
                                                                                  prefilling, cloud_sim):
    prefilling.prefill_tokens_per_s = 2_000  # 40,000 tokens: 20 s of prefill; a rate after 0.5 s
    server = await gateway_factory(local={"first_token_timeout_s": 10.0},
                                   routing={**LOCAL_FIRST, "max_local_ttft_s": 0.0})
    headers, events, elapsed = await post(http, server, {"model": "glm-4.7", "stream": True,
                                                         "messages": long_prompt(40_000)})
    assert (headers["x-glm-backend"], headers["x-glm-route-reason"]) == ("cloud", "slow_local")
    assert events[-1] == "[DONE]" and elapsed < 2.0  # the timeout is 10 s: it was not waited out
    (abandoned,) = await prefilling.wait_for_requests(1)
    assert abandoned.outcome == "cancelled"  # the slot is freed
    async with http.get(server.make_url("/health")) as resp:
        local = (await resp.json())["backends"]["local"]
    assert local["breaker"] == "closed" and local["recent_failures"] == 0  # a long prompt, not a failure


async def test_a_learned_prefill_speed_sends_a_long_prompt_to_the_cloud_before_it_is_sent(gateway_factory, http,
                                                                                         prefilling):
    prefilling.prefill_tokens_per_s = 4_000
    server = await gateway_factory(routing={**LOCAL_FIRST, "max_local_ttft_s": 5.0})
    headers, _, _ = await post(http, server, {"model": "glm-4.7", "stream": True, "messages": long_prompt(2_000)})
    assert headers["x-glm-backend"] == "local"  # and llama.cpp's timings teach its prefill speed
    async with http.get(server.make_url("/health")) as resp:
        local = (await resp.json())["backends"]["local"]
    assert local["prefill_tps"] == pytest.approx(4_000, rel=0.5) and local["predicted_ttft_s_10k_tokens"] > 1
    async with http.get(server.make_url("/metrics")) as resp:
        metrics = await resp.text()
    assert f'glm_gateway_backend_prefill_tokens_per_second{{backend="local",tier="local"}} {local["prefill_tps"]}' \
        in metrics
    headers, events, _ = await post(http, server, {"model": "glm-4.7", "stream": True,
                                                   "messages": long_prompt(40_000)})  # ~10 s predicted
    assert (headers["x-glm-backend"], headers["x-glm-route-reason"]) == ("cloud", "slow_local")
    assert len(prefilling.requests) == 1  # never sent to local


async def test_a_pinned_slow_prefill_is_waited_for_not_failed(gateway_factory, http, prefilling):
    # 8,000 tokens at 10,000/s: 0.8 s, far past a 0.3 s first-token timeout, but progressing and
    # pinned to local: nowhere else to go, so the answer is waited for instead of a 504.
    prefilling.prefill_tokens_per_s = 10_000
    server = await gateway_factory(local={"first_token_timeout_s": 0.3, "stall_timeout_s": 0.3})
    headers, events, elapsed = await post(http, server, {"model": "glm-4.7-local", "stream": True,
                                                         "messages": long_prompt(8_000)})
    assert headers["x-glm-backend"] == "local" and events[-1] == "[DONE]" and elapsed >= 0.6
