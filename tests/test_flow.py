"""The supervisor's state machine and its event stream, with scripted backends: no sockets, no
sleeps: the clock is a :class:`backends.ManualClock`, and time jumps to the next timer whenever
every task is waiting on it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from backends import BackendRejected, BackendUnavailable, Capabilities, Chunk, ManualClock
from config.schema import CLOUD_DEFAULT, LOCAL_DEFAULT, ClassifierConfig, RoutingConfig
from routing import Failed, Finished, Hedged, Outcome, Router, Serving, Started, Switched, TokenCounter, Usage
from routing.events import BEFORE_FIRST_TOKEN, MID_CONTENT, MID_TOOL_CALL
from routing.flow import Flow
from routing.policy import RouteDecision

CFG = RoutingConfig()
TIERS = {"spark-1": "local", "spark-2": "local", "cerebras": "cloud", "zai": "cloud"}
PREFILL = {"spark-1": True, "spark-2": True, "cerebras": False, "zai": False}


def flow(*candidates: str, reserve: tuple[str, ...] = (), **cfg: Any) -> Flow:
    f = Flow(RouteDecision(candidates, "simple", reserve=reserve), RoutingConfig(**cfg), tiers=TIERS,
             prefill=PREFILL, started=0.0)
    f.sent(f.first().target)  # type: ignore[arg-type]
    return f


def down(name: str, status: int = 503, **kw: Any) -> BackendUnavailable:
    return BackendUnavailable(name, f"{name} answered {status}", status=status, **kw)


def every(name: str) -> bool:
    return True


# --- the pure state machine ---------------------------------------------------------------------

def test_before_the_first_byte_the_rest_of_the_tier_comes_before_the_other_tier():
    f = flow("spark-1", "spark-2", "cerebras")
    step = f.failed(down("spark-1"), BEFORE_FIRST_TOKEN, has_content=False, now=0.1, usable=every)
    assert (step.target, step.method, step.reason, step.blame) == ("spark-2", "restart", "fallback", True)
    f.sent("spark-2")
    step = f.failed(down("spark-2"), BEFORE_FIRST_TOKEN, has_content=False, now=0.2, usable=every)
    assert (step.target, step.method) == ("cerebras", "restart")


def test_the_only_backend_is_retried_after_a_jittered_backoff_never_before_retry_after():
    f = flow("cerebras")
    step = f.failed(down("cerebras", 429, retry_after=2.5), BEFORE_FIRST_TOKEN, has_content=False, now=0,
                    usable=every)
    assert (step.target, step.method, step.delay_s) == ("cerebras", "retry", 2.5)
    f.sent("cerebras")
    f.sent("cerebras")
    step = f.failed(down("cerebras"), BEFORE_FIRST_TOKEN, has_content=False, now=3, usable=every)
    assert step.gives_up and step.error.status == 503  # max_attempts (3) spent


def test_a_wait_past_the_time_budget_is_left_to_the_client():
    step = flow("cerebras").failed(down("cerebras", 429, retry_after=45), BEFORE_FIRST_TOKEN, has_content=False,
                                   now=0, usable=every)
    assert step.gives_up and step.error.retry_after == 45


def test_a_rejection_goes_to_the_client_and_blames_no_backend():
    error = BackendRejected("spark-1", "bad tool schema", status=422)
    step = flow("spark-1", "cerebras").failed(error, BEFORE_FIRST_TOKEN, has_content=False, now=0, usable=every)
    assert step.gives_up and step.rejected and step.error is error and not step.blame


def test_a_slow_prefill_moves_on_with_reason_slow_local_and_no_blame():
    error = down("spark-1", 504, failure="slow_prefill")
    step = flow("spark-1", "cerebras").failed(error, BEFORE_FIRST_TOKEN, has_content=False, now=1, usable=every)
    assert (step.target, step.reason, step.blame) == ("cerebras", "slow_local", False)


def test_mid_answer_the_failover_continues_on_another_tier_first():
    f = flow("spark-1", "spark-2", "cerebras")
    stall = down("spark-1", 504, failure="stall")
    step = f.failed(stall, MID_CONTENT, has_content=True, now=5, usable=every)
    # spark-2 runs the same model on the same kind of box and would re-prefill cold: the cloud.
    assert (step.target, step.method) == ("cerebras", "instruction")
    f.sent("cerebras")
    step = f.failed(down("cerebras", 502), MID_CONTENT, has_content=True, now=6, usable=every)
    assert step.gives_up and "continuing on cerebras failed" in step.error.message
    assert step.error.failure == "stall"  # the client is told the original failure


def test_mid_answer_a_prefill_backend_continues_by_prefill_and_a_refusal_is_asked_in_words():
    f = flow("cerebras", "spark-1")
    step = f.failed(down("cerebras", 502, failure="cut"), MID_CONTENT, has_content=True, now=1, usable=every)
    assert (step.target, step.method) == ("spark-1", "prefill")
    f.sent("spark-1")
    refused = BackendRejected("spark-1", "prefill is incompatible with enable_thinking", status=400)
    step = f.failed(refused, MID_CONTENT, has_content=True, now=1.1, usable=every)
    assert (step.target, step.method, step.blame) == ("spark-1", "instruction", False)


def test_a_tool_call_in_flight_restarts_the_turn():
    # Calls are held back until complete, so the client has no content: the turn restarts.
    f = flow("spark-1", "cerebras")
    step = f.failed(down("spark-1", 504, failure="stall"), MID_TOOL_CALL, has_content=False, now=2, usable=every)
    assert (step.target, step.method) == ("cerebras", "restart")


def test_a_failover_waits_for_a_backend_that_recovers_within_the_budget_else_gives_up():
    f = flow("spark-1", "cerebras")
    step = f.failed(down("spark-1", 504, failure="cut"), MID_CONTENT, has_content=True, now=10,
                    usable=lambda n: False, recovers_at=lambda n: 14.0 if n == "cerebras" else None)
    assert (step.target, step.delay_s, step.recheck) == ("cerebras", pytest.approx(4.01), True)
    f = flow("spark-1", "cerebras")
    step = f.failed(down("spark-1", 504, failure="cut"), MID_CONTENT, has_content=True, now=10,
                    usable=lambda n: False, recovers_at=lambda n: 100.0)
    assert step.gives_up and step.error.failure == "cut"


# --- the supervisor's events, with scripted backends ---------------------------------------------

USAGE = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}


def done() -> Chunk:
    # A fresh one each time: the splice writes the summed usage into the chunk it relays.
    return Chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": dict(USAGE)})


def content(text: str) -> Chunk:
    return Chunk({"choices": [{"index": 0, "delta": {"content": text}}]})


def tool_call(args: str) -> Chunk:
    return Chunk({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": args}}]}}]})


class Scripted:
    """A Backend (backends.protocol): each stream() plays the next script, a list of chunks and
    errors; ``hold`` makes a stream wait on an event that a test never sets."""

    def __init__(self, name: str, cfg: Any, *scripts: list[Any]) -> None:
        self.name, self.cfg, self.tier, self.caps = name, cfg, cfg.tier, Capabilities.of(cfg)
        self.rate_limits: dict = {}
        self.scripts = list(scripts)
        self.bodies: list[dict] = []

    async def stream(self, body: Any):
        self.bodies.append(body)
        for item in self.scripts.pop(0) if self.scripts else [content(self.name), done()]:
            if item == "hold":
                await asyncio.Event().wait()
            if isinstance(item, Exception):
                raise item
            if isinstance(item, Chunk):
                yield item

    def continuation_request(self, body: Any, partial: str, prefill: bool, prompt: str) -> dict:
        return {**body, "continue": partial, "prefill": prefill}


async def run(local: list[list[Any]], cloud: list[list[Any]], strategy: str = "local_first", clock: Any = None,
              **cfg: Any):
    # Time moves only when every task waits on the clock: then it jumps to the next timer
    # (a watchdog's deadline, the hedge's moment, a retry's backoff). No real sleeps.
    clock = clock or ManualClock(100.0, sleep_advances=False)
    backends = {"local": Scripted("local", LOCAL_DEFAULT, *local), "cloud": Scripted("cloud", CLOUD_DEFAULT, *cloud)}
    router = Router(backends, RoutingConfig(classifier=ClassifierConfig(method="keywords"), **cfg), TokenCounter(),
                    clock=clock, rand=lambda: 1.0)
    body = {"messages": [{"role": "user", "content": "fix the typo"}]}
    route = router.route(body, strategy)

    async def consume() -> list[Any]:
        return [e async for e in router.stream(route, body).events()]

    task = asyncio.ensure_future(consume())
    await clock.run_until_idle(task)
    events = task.result()
    tally = Outcome.of(route)
    for e in events:
        tally.fold(e)
    return [e for e in events if type(e) is not Chunk], [e for e in events if type(e) is Chunk], tally, backends


def text(chunks: list[Chunk]) -> str:
    return "".join((c.data["choices"][0]["delta"].get("content") or "") for c in chunks if c.data.get("choices"))


async def test_a_clean_run_is_started_serving_usage_finished():
    control, chunks, tally, _ = await run([[content("hi"), done()]], [])
    assert control == [Started("local", "local_first", 1), Serving("local"),
                       Usage("local", USAGE, estimated=False), Finished("local", ("local",), 0.0)]
    assert text(chunks) == "hi" and tally.model_used == "local" and tally.finished


async def test_a_stall_mid_answer_continues_on_the_cloud_with_one_coherent_text():
    stall = BackendUnavailable("local", "stalled", status=504, failure="stall")
    control, chunks, tally, b = await run([[content("The answer "), stall]], [[content("is 42."), done()]])
    assert [type(e) for e in control] == [Started, Serving, Usage, Switched, Started, Serving, Usage, Finished]
    switched = control[3]
    assert (switched.source, switched.target, switched.failure, switched.phase, switched.method) == (
        "local", "cloud", "stall", MID_CONTENT, "instruction")
    assert text(chunks) == "The answer is 42." and b["cloud"].bodies[0]["continue"] == "The answer "
    assert tally.served_by == ("local", "cloud") and tally.usage["local"]["estimated"]
    # The final usage sums both backends: the local estimate plus the cloud's own figures.
    assert chunks[-1].data["usage"]["completion_tokens"] > USAGE["completion_tokens"]


async def test_a_tool_call_cut_in_flight_never_reaches_the_client_half_done():
    cut = BackendUnavailable("local", "cut", status=502, failure="cut")
    control, chunks, tally, _ = await run([[tool_call('{"pa'), cut]], [[tool_call('{"path": "a.py"}'), done()]])
    calls = [c for c in chunks if c.data.get("choices") and c.data["choices"][0]["delta"].get("tool_calls")]
    assert [c.data["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for c in calls] == [
        '{"path": "a.py"}']
    switched = next(e for e in control if type(e) is Switched)
    assert (switched.phase, switched.method) == (MID_TOOL_CALL, "restart") and tally.served_by == ("cloud",)


async def test_giving_up_ends_with_failed_and_never_finished():
    stall = BackendUnavailable("local", "stalled", status=504, failure="stall")
    again = BackendUnavailable("cloud", "cloud cut", status=502, failure="cut")
    control, chunks, tally, _ = await run([[content("part"), stall]], [[content(" more"), again]])
    assert type(control[-1]) is Failed and not any(type(e) is Finished for e in control)
    assert tally.error is not None and "continuing on cloud failed" in tally.error.message


async def test_a_refusal_before_any_byte_is_failed_at_once_with_nothing_switched():
    error = BackendRejected("local", "bad request", status=400)
    control, chunks, tally, b = await run([[error]], [], strategy="local_first")
    assert control == [Started("local", "local_first", 1), Failed(error, (), None)]
    assert not b["cloud"].bodies and not chunks


async def test_a_retry_waits_on_the_injected_clock():
    control, _, tally, b = await run([], [[BackendUnavailable("cloud", "429", status=429, retry_after=3.0)]],
                                     strategy="cloud_only")
    assert [(e.method, e.delay_s) for e in control if type(e) is Switched] == [("retry", 3.0)]
    assert tally.backend == "cloud" and tally.finished and len(b["cloud"].bodies) == 2


async def test_a_hedge_races_the_tiers_and_the_loser_is_accounted_as_estimated():
    # Local holds its first token; the hedge starts the cloud at once (hedge_after_s is tiny).
    control, chunks, tally, _ = await run([["hold"]], [[content("fast"), done()]], strategy="local_first",
                                          hedge_after_s=0.001)
    assert Hedged("local", "cloud", "cloud") in control
    assert tally.usage["local"]["estimated"] and tally.served_by == ("cloud",) and text(chunks) == "fast"
    assert [e.backend for e in control if type(e) is Started] == ["local", "cloud"]


# --- the watchdog and the hedge on the one clock: their timeouts fire with no real waiting -------

async def test_a_first_token_timeout_fires_at_its_deadline_on_the_injected_clock():
    clock = ManualClock(100.0, sleep_advances=False)
    control, chunks, tally, _ = await run([["hold"]], [[content("from the cloud"), done()]], clock=clock)
    switched = next(e for e in control if type(e) is Switched)
    assert (switched.failure, switched.phase, switched.method, switched.target) == (
        "ttft", BEFORE_FIRST_TOKEN, "restart", "cloud")
    assert clock() == 100.0 + LOCAL_DEFAULT.first_token_timeout_s  # exactly the budget, not a moment later
    assert text(chunks) == "from the cloud" and tally.served_by == ("cloud",)


async def test_a_stall_is_caught_by_the_watchdog_and_continued_on_the_cloud():
    clock = ManualClock(100.0, sleep_advances=False)
    control, chunks, tally, b = await run([[content("The answer "), "hold"]], [[content("is 42."), done()]],
                                          clock=clock)
    switched = next(e for e in control if type(e) is Switched)
    assert (switched.failure, switched.phase, switched.method) == ("stall", MID_CONTENT, "instruction")
    assert clock() == 100.0 + LOCAL_DEFAULT.stall_timeout_s
    assert text(chunks) == "The answer is 42." and b["cloud"].bodies[0]["continue"] == "The answer "


async def test_the_hedge_starts_the_other_tier_at_its_moment_not_before():
    clock = ManualClock(100.0, sleep_advances=False)
    control, chunks, tally, _ = await run([["hold"]], [[content("fast"), done()]], clock=clock, hedge_after_s=2.5)
    assert Hedged("local", "cloud", "cloud") in control and text(chunks) == "fast"
    assert clock() == 102.5  # the hedge's timer, and nothing before it, moved time


async def test_a_primary_that_answers_before_the_hedge_moment_runs_alone():
    clock = ManualClock(100.0, sleep_advances=False)
    control, _, tally, b = await run([[content("quick"), done()]], [], clock=clock, hedge_after_s=2.5)
    assert not any(type(e) is Hedged for e in control) and not b["cloud"].bodies and clock() == 100.0
