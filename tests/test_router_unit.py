"""The router's attempt loop with scripted fake backends: a fake clock, a recorded sleep, no sockets."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from backends import BackendProtocolError, BackendRejected, BackendUnavailable, Capabilities, Chunk, ContextOverflow
from config.schema import CLOUD_DEFAULT, LOCAL_DEFAULT, ClassifierConfig, RoutingConfig
from routing import NoBackendAvailable, Outcome, Router, TokenCounter

DONE = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": {"total_tokens": 1}}


class ScriptedBackend:
    """Implements the Backend interface the router uses; each call takes the next outcome."""

    def __init__(self, name: str, cfg: Any, outcomes: list[Any]) -> None:
        self.name, self.cfg, self.outcomes = name, cfg, list(outcomes)
        self.tier, self.caps = cfg.tier, Capabilities.of(cfg)
        self.rate_limits: dict = {}
        self.calls: list[float] = []
        self.clock: FakeClock | None = None

    def _next(self) -> Any:
        assert self.clock is not None
        self.calls.append(self.clock.now)
        outcome = self.outcomes.pop(0) if self.outcomes else "ok"
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def stream(self, body: Any):
        self._next()
        yield Chunk({"choices": [{"index": 0, "delta": {"content": self.name}}]})
        yield Chunk(DONE)

    async def complete(self, body: Any) -> dict:
        self._next()
        return {"served_by": self.name}

    def continuation_request(self, body: Any, partial: str, prefill: bool, prompt: str) -> dict:
        return {**body, "partial": partial, "prefill": prefill}


@attrs.define
class FakeClock:
    now: float = 1000.0
    sleeps: list[float] = attrs.Factory(list)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make_router(local: list[Any], cloud: list[Any], *, rand: float = 1.0, **cfg: Any):
    clock = FakeClock()
    backends = {"local": ScriptedBackend("local", LOCAL_DEFAULT, local),
                "cloud": ScriptedBackend("cloud", CLOUD_DEFAULT, cloud)}
    for b in backends.values():
        b.clock = clock
    cfg.setdefault("classifier", ClassifierConfig(method="keywords"))
    router = Router(backends, RoutingConfig(**cfg), TokenCounter(), clock=clock, sleep=clock.sleep,
                    rand=lambda: rand)
    return router, backends, clock


BODY = {"messages": [{"role": "user", "content": "fix the typo"}]}


def unavailable(status: int = 503, retry_after: float | None = None, backend: str = "local"):
    return BackendUnavailable(backend, f"HTTP {status}", status=status, retry_after=retry_after)


async def run(router: Router, strategy: str = "complexity") -> tuple[str, str, dict]:
    route = router.route(BODY, strategy)
    result, outcome = await router.complete(route, BODY)
    return outcome.backend, outcome.reason, result


async def test_fails_over_at_once_to_an_untried_backend():
    router, b, clock = make_router([unavailable(500)], [])
    assert (await run(router))[:2] == ("cloud", "fallback")
    assert clock.sleeps == [] and len(b["local"].calls) == 1


async def test_retries_the_only_backend_with_exponential_full_jitter_backoff():
    router, b, clock = make_router([unavailable(), unavailable()], [], rand=0.5, backoff_base_s=0.2)
    assert (await run(router, "local_only"))[0] == "local"
    assert clock.sleeps == [0.1, 0.2]  # rand * base * 2**n
    assert len(b["local"].calls) == 3


async def test_backoff_is_capped():
    router, _, clock = make_router([unavailable()] * 4, [], max_attempts=5, backoff_base_s=1, backoff_max_s=1.5)
    await run(router, "local_only")
    assert clock.sleeps == [1, 1.5, 1.5, 1.5]


async def test_retry_after_is_honoured():
    router, b, clock = make_router([], [unavailable(429, 2.5, "cloud")], rand=0.0)
    assert (await run(router, "cloud_only"))[0] == "cloud"
    assert clock.sleeps == [2.5]
    assert b["cloud"].calls[1] - b["cloud"].calls[0] == 2.5


async def test_persistent_429_is_bounded_by_attempts():
    router, b, clock = make_router([], [unavailable(429, 1, "cloud")] * 10)
    with pytest.raises(BackendUnavailable) as info:
        await run(router, "cloud_only")
    assert info.value.status == 429 and len(b["cloud"].calls) == 3
    assert clock.sleeps == [1, 1]


async def test_wait_beyond_the_time_budget_is_left_to_the_client():
    router, b, clock = make_router([], [unavailable(429, 45, "cloud")], max_total_s=30)
    with pytest.raises(BackendUnavailable) as info:
        await run(router, "cloud_only")
    assert info.value.retry_after == 45 and clock.sleeps == [] and len(b["cloud"].calls) == 1


async def test_429_cools_the_backend_down_for_later_requests():
    router, b, clock = make_router([], [unavailable(429, 20, "cloud")], sticky=False)
    assert (await run(router, "cloud_first"))[:2] == ("local", "fallback")
    assert (await run(router, "cloud_first"))[:2] == ("local", "unavailable")
    clock.now += 20
    assert (await run(router, "cloud_first"))[:2] == ("cloud", "cloud_first")
    assert len(b["cloud"].calls) == 2


async def test_context_overflow_moves_on_and_never_retries_the_same_backend():
    router, b, clock = make_router([ContextOverflow("local", "too long")], [])
    assert (await run(router))[0] == "cloud"
    assert len(b["local"].calls) == 1 and clock.sleeps == []
    router, b, _ = make_router([ContextOverflow("local", "too long")], [])
    with pytest.raises(ContextOverflow):
        await run(router, "local_only")
    assert len(b["local"].calls) == 1


async def test_rejections_are_not_retried_anywhere():
    router, b, _ = make_router([BackendRejected("local", "bad tool schema", status=422)], [])
    with pytest.raises(BackendRejected):
        await run(router)
    assert len(b["local"].calls) == 1 and not b["cloud"].calls


async def test_breaker_opens_then_a_recovered_backend_is_used_within_its_open_time():
    router, b, clock = make_router([unavailable()] * 3, [], breaker_failures=3, breaker_open_s=10, sticky=False)
    for _ in range(3):
        assert (await run(router, "local_first"))[:2] == ("cloud", "fallback")
    assert (await run(router, "local_first"))[:2] == ("cloud", "unavailable")  # open: not even tried
    assert len(b["local"].calls) == 3
    clock.now += 10
    assert (await run(router, "local_first"))[:2] == ("local", "local_first")  # half-open trial works
    assert router.states.breakers["local"].state(clock.now) == "closed"


async def test_streams_fall_back_before_the_first_chunk_only():
    router, b, _ = make_router([BackendProtocolError("local", "malformed event")], [])
    route = router.route(BODY, "local_first")
    events = [e async for e in router.stream(route, BODY).events()]
    chunks = [e.data for e in events if type(e) is Chunk]
    assert chunks[0]["choices"][0]["delta"]["content"] == "cloud"
    tally = Outcome("local", "local_first")
    for e in events:
        tally.fold(e)
    assert tally.failures == [("local", "malformed event")] and tally.served_by == ("cloud",)


async def test_nothing_available_is_an_error_that_says_why():
    router, _, clock = make_router([], [])
    router.states.observe_health("local", "down", clock.now)
    router.states.failed("cloud", unavailable(429, 12, "cloud"), clock.now)
    with pytest.raises(NoBackendAvailable) as info:
        router.route(BODY, "complexity")
    assert info.value.retry_after == 12
    assert info.value.reasons == "local: down; cloud: cooling down after 429"
