"""Features, classifier, states and policy: pure, so no sockets and no sleeps; the clock and the
token counter are injected."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from backends import RateLimit
from config.schema import BackendConfig, ClassifierConfig, RoutingConfig
from routing.classifier import COMPLEX, SIMPLE, Classification, Classifier
from routing.features import extract_features, task_text
from routing.policy import NoRoute, RouteDecision, decide
from routing.state import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BackendStates,
    BackendView,
    CircuitBreaker,
    StickyMap,
    ratelimited_until,
)
from routing.tokens import CHARS_PER_TOKEN, TokenCounter, estimate

SYSTEM = "You are Cline, a highly skilled software engineer. " * 200
ENV = "<environment_details>\n# VSCode Visible Files\nsrc/app.py\n# Current Time\n2026-11-25\n</environment_details>"


class CountingCounter(TokenCounter):
    """A token counter that counts one token per word and remembers how often it was asked."""

    def __init__(self) -> None:
        self.calls = 0

        def count(text: str) -> int:
            self.calls += 1
            return len(text.split())

        super().__init__(count, "words")


def cline(task: str, *turns: dict) -> dict:
    first = {"role": "user", "content": [{"type": "text", "text": f"<task>\n{task}\n</task>"},
                                         {"type": "text", "text": ENV}]}
    return {"model": "glm-4.7", "messages": [{"role": "system", "content": SYSTEM}, first, *turns]}


def tool_result(tool: str, output: str, target: str = "src/app.py") -> dict:
    return {"role": "user", "content": [{"type": "text", "text": f"[{tool} for '{target}'] Result:"},
                                        {"type": "text", "text": output}, {"type": "text", "text": ENV}]}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


# --- token counting ------------------------------------------------------------------------------

def test_counts_are_cached_per_message_across_turns():
    counter = CountingCounter()
    body = cline("fix the typo", assistant("<read_file>src/app.py</read_file>"),
                 tool_result("read_file", "print('hello')\n" * 500))
    first = extract_features(body, counter).prompt_tokens
    calls_after_first = counter.calls
    body["messages"] += [assistant("Done."), {"role": "user", "content": "thanks"}]
    second = extract_features(body, counter).prompt_tokens
    # Only the two new messages were tokenised: the task ("thanks", the newest user message)
    # is one of them, and its count comes from the cache.
    assert counter.calls - calls_after_first == 2
    assert second > first


def test_estimate_is_calibrated_against_tiktoken():
    tiktoken = TokenCounter.default()
    if not tiktoken.method.startswith("tiktoken"):
        pytest.skip("tiktoken could not load offline here")
    # Cline-shaped: prose instructions plus source code, here this project's own README and relay.
    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text() + (root / "gateway" / "sse.py").read_text()
    ratio = estimate(text) / tiktoken.count(text)
    assert 0.8 < ratio < 1.25, ratio


def test_estimate_fallback_names_itself():
    counter = TokenCounter()
    assert counter.method == f"estimate:{CHARS_PER_TOKEN}chars/token"
    assert counter.count("x" * 37) == 10


def test_default_counter_loads_tiktoken_offline():
    # The test machines have no internet: success means the bundled BPE file was used.
    assert TokenCounter.default().method == "tiktoken:cl100k_base"


# --- features ------------------------------------------------------------------------------------

def test_task_is_the_cline_task_not_tool_output_or_system_prompt():
    body = cline("Rename the variable foo to bar", assistant("<read_file>x</read_file>"),
                 tool_result("read_file", "# refactor the whole architecture and debug the race condition"))
    assert task_text(body["messages"]) == "Rename the variable foo to bar"


def test_feedback_in_a_completion_result_is_the_new_task():
    feedback = tool_result("attempt_completion", "The user has provided feedback on the results.\n"
                           "<feedback>\nNow redesign the caching layer\n</feedback>", target="")
    body = cline("Rename foo", assistant("<attempt_completion>done</attempt_completion>"), feedback)
    assert task_text(body["messages"]) == "Now redesign the caching layer"


def test_plain_user_message_without_tags_is_the_task_minus_environment():
    body = {"messages": [{"role": "user", "content": "explain this line please\n" + ENV}]}
    assert task_text(body["messages"]) == "explain this line please"


def test_native_tool_messages_are_skipped():
    body = {"messages": [{"role": "user", "content": "list files in src"},
                         {"role": "assistant", "content": None, "tool_calls": [
                             {"id": "1", "type": "function", "function": {"name": "ls", "arguments": "{}"}}]},
                         {"role": "tool", "tool_call_id": "1", "content": "refactor.py\narchitecture.md"}]}
    assert task_text(body["messages"]) == "list files in src"


def test_feature_values():
    counter = CountingCounter()
    task = "Make these agree:\n```py\na = 1\n```\nand\n```py\nb = 2\n```"
    body = cline(task, assistant("ok"), {"role": "user", "content": [
        {"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]})
    body.update(max_tokens=512, tools=[{"type": "function", "function": {"name": "f"}}])
    f = extract_features(body, counter)
    assert f.task_text == "look"  # the latest real instruction
    assert (f.code_blocks, f.has_images, f.has_tools, f.max_tokens, f.depth) == (0, True, True, 512, 1)
    assert extract_features(cline(task), counter).code_blocks == 2
    assert f.prompt_tokens > len(SYSTEM.split())


def test_conversation_key_is_stable_across_turns_and_differs_between_conversations():
    counter = CountingCounter()
    one = cline("task one")
    key = extract_features(one, counter).conversation_key
    one["messages"] += [assistant("a"), tool_result("read_file", "x")]
    assert extract_features(one, counter).conversation_key == key
    assert extract_features(cline("task two"), counter).conversation_key != key


# --- classifier ----------------------------------------------------------------------------------

def classify(task: str, cfg: ClassifierConfig = ClassifierConfig(method="keywords"), prompt_tokens: int = 100,
             counter: TokenCounter | None = None) -> Classification:
    counter = counter or CountingCounter()
    features = attrs.evolve(extract_features({"messages": [{"role": "user", "content": task}]}, counter),
                            prompt_tokens=prompt_tokens)
    return Classifier(cfg).classify(features)


def test_whole_words_only_install_is_not_all():
    cfg = ClassifierConfig(method="keywords", complex_keywords=("all",), simple_keywords=(), complex_keyword_weight=5)
    assert classify("install the package", cfg).label == SIMPLE
    assert classify("update all call sites", cfg).label == COMPLEX
    cfg = ClassifierConfig(method="keywords", complex_keywords=(), simple_keywords=("format",), complex_threshold=0)
    assert classify("collect information", cfg).reasons == ()


def test_phrases_match_across_whitespace_and_case():
    result = classify("Find the ROOT\n  cause of this Race Condition")
    assert result.label == COMPLEX
    assert result.reasons == ("complex keywords: race condition, root cause",)
    assert result.score == 4.0


def test_simple_keywords_lower_the_score():
    assert classify("fix the typo in the readme").label == SIMPLE
    assert classify("fix the typo in the readme").score == -2.0
    # One complex word outweighs one simple word only if the threshold allows it.
    assert classify("rename and refactor").score == 1.0
    assert classify("rename and refactor").label == SIMPLE


def test_thresholds_on_task_size_code_blocks_and_conversation():
    long_task = "please change the widget " * 200
    result = classify(long_task)
    assert result.label == COMPLEX and any(r.startswith("long task") for r in result.reasons)
    blocks = "compare ```a``` ```b``` ```c```"
    assert "3 code blocks" in classify(blocks).reasons
    big = classify("change it", prompt_tokens=50_000)
    assert big.reasons == ("large conversation (50000 tokens)",) and big.label == SIMPLE


# --- state ---------------------------------------------------------------------------------------

def test_breaker_opens_half_opens_and_closes():
    b = CircuitBreaker(failures=3, open_s=10)
    b.record_failure(0)
    b.record_failure(1)
    assert b.state(2) == CLOSED
    b.record_failure(2)
    assert (b.state(3), b.allows(3)) == (OPEN, False)
    assert (b.state(12), b.allows(12)) == (HALF_OPEN, True)
    b.started(12)
    assert not b.allows(13)  # one trial at a time
    b.record_failure(13)  # the trial failed: open again, twice as long
    assert b.state(32) == OPEN and b.state(33) == HALF_OPEN
    b.started(33)
    b.record_success(34)
    assert b.state(34) == CLOSED and b.failures == 0


def test_breaker_ignores_sparse_failures_among_successes():
    b = CircuitBreaker(failures=3, open_s=10)
    for t in range(20):
        b.record_success(t)
    for t in range(20, 120):  # ~13% errors, three of them back to back now and then
        b.record_failure(t) if t % 10 in (0, 1) or t % 33 == 2 else b.record_success(t)
        assert b.state(t) == CLOSED
    for t in range(120, 123):  # then it really dies
        b.record_failure(t)
    assert b.state(123) == CLOSED  # these plus the recent ones are still under half the window
    for t in range(123, 135):
        b.record_failure(t)
    assert b.state(135) == OPEN


def test_breaker_open_time_never_exceeds_30s_and_probe_reopens_early():
    b = CircuitBreaker(failures=1, open_s=25)
    t = 0.0
    for _ in range(5):
        b.record_failure(t)
        t += 31
        assert b.state(t) == HALF_OPEN
        b.started(t)
    b.record_failure(t)
    assert b.state(t + 1) == OPEN
    b.probe_ok(t + 1)  # the health probe saw it answer
    assert b.state(t + 1) == HALF_OPEN


def test_cooldown_has_a_fixed_end_under_steady_traffic():
    states = BackendStates({"cloud": BackendConfig()}, RoutingConfig(cooldown_s=10))
    from backends import BackendUnavailable
    states.failed("cloud", BackendUnavailable("cloud", "slow down", status=429, retry_after=5), now=100)
    for t in range(100, 105):  # requests keep coming; each sees the cooldown, none extends it
        assert states.views(10, t)["cloud"].unavailable() == "cooling down after 429"
    assert states.views(10, 105)["cloud"].unavailable() is None
    states.failed("cloud", BackendUnavailable("cloud", "slow down", status=429), now=200)
    assert states.views(10, 209.9)["cloud"].blocked_until == 210


def test_rate_limit_headroom_compares_counts_not_a_fraction_with_20():
    half = {"tokens-minute": RateLimit(limit=60_000, remaining=30_000, reset_s=30, seen_at=0)}
    assert ratelimited_until(half, needed_tokens=5_000, reserve=0.02, now=1) is None
    assert ratelimited_until(half, needed_tokens=29_500, reserve=0.02, now=1) == 30
    assert ratelimited_until(half, needed_tokens=29_500, reserve=0.02, now=31) is None  # window reset
    day = {"requests-day": RateLimit(limit=1000, remaining=15, reset_s=3600, seen_at=0)}
    assert ratelimited_until(day, 10, reserve=0.02, now=1) == 3600  # 14 left < 20 reserved
    assert ratelimited_until(day, 10, reserve=0.0, now=1) is None


def test_sticky_map_expires_and_is_bounded():
    sticky = StickyMap(ttl_s=10, max_size=2)
    sticky.set("a", "local", 0)
    assert sticky.get("a", 10) == "local" and sticky.get("a", 10.1) is None
    sticky.set("b", "cloud", 0)
    sticky.set("c", "cloud", 0)
    sticky.set("d", "cloud", 0)
    assert sticky.get("b", 1) is None and sticky.get("d", 1) == "cloud"


# --- policy --------------------------------------------------------------------------------------

def views(**overrides: dict) -> dict[str, BackendView]:
    base = {"local": BackendView("local", 65536, False, tier="local"),
            "cloud": BackendView("cloud", 131072, False, tier="cloud")}
    return {name: attrs.evolve(view, **overrides.get(name, {})) for name, view in base.items()}


def features(prompt_tokens: int = 1000, images: bool = False, max_tokens: int | None = None):
    f = extract_features({"messages": [{"role": "user", "content": "hi"}]}, CountingCounter())
    return attrs.evolve(f, prompt_tokens=prompt_tokens, has_images=images, max_tokens=max_tokens)


SIMPLE_TASK = Classification(SIMPLE, -1, ())
COMPLEX_TASK = Classification(COMPLEX, 4, ("complex keywords: refactor",))
CFG = RoutingConfig()


def route(strategy: str = "complexity", cls: Classification = SIMPLE_TASK, v: dict | None = None,
          sticky: str | None = None, f=None) -> RouteDecision | NoRoute:
    return decide(f or features(), cls, v or views(), CFG, strategy=strategy, sticky=sticky, now=0)


@pytest.mark.parametrize("strategy,cls,expected", [
    ("complexity", SIMPLE_TASK, ("local", "cloud", "simple")),
    ("complexity", COMPLEX_TASK, ("cloud", "local", "complex")),
    ("local_first", COMPLEX_TASK, ("local", "cloud", "local_first")),
    ("cloud_first", SIMPLE_TASK, ("cloud", "local", "cloud_first")),
    ("local_only", COMPLEX_TASK, ("local", None, "pinned")),
    ("cloud_only", SIMPLE_TASK, ("cloud", None, "pinned")),
])
def test_strategies(strategy, cls, expected):
    d = route(strategy, cls)
    assert (d.primary, d.fallback, d.reason) == expected


def test_context_that_does_not_fit_local_goes_to_the_cloud():
    d = route(f=features(prompt_tokens=62_000))  # + 4096 reserved for the answer > 65536
    assert (d.primary, d.fallback, d.reason) == ("cloud", None, "context")
    assert d.skipped == (("local", "needs 66096 tokens, context is 65536"),)
    assert route(f=features(prompt_tokens=61_000)).primary == "local"


def test_context_that_fits_nowhere_goes_to_the_biggest_window():
    d = route(f=features(prompt_tokens=200_000))
    assert (d.primary, d.reason) == ("cloud", "context")
    d = route("local_only", f=features(prompt_tokens=200_000))
    assert (d.primary, d.reason) == ("local", "context")  # pinned: local's own overflow error tells Cline


def test_images_go_only_to_a_backend_that_accepts_them():
    v = views(cloud={"supports_images": True})
    d = route(v=v, f=features(images=True))
    assert (d.primary, d.fallback, d.reason) == ("cloud", None, "images")
    # Nobody accepts images: the rule cannot help, so it does not block (backends drop them).
    assert route(f=features(images=True)).primary == "local"


@pytest.mark.parametrize("state,why", [
    ({"health": "down"}, "down"), ({"health": "loading"}, "loading"), ({"breaker": OPEN}, "circuit open"),
    ({"blocked_until": 50, "blocked_why": "cooling down after 429"}, "cooling down after 429"),
    ({"blocked_until": 50, "blocked_why": "rate limit nearly spent"}, "rate limit nearly spent"),
    ({"over_budget": "daily cloud budget of $5.00 spent"}, "over budget (daily cloud budget of $5.00 spent)"),
])
def test_unavailable_backends_are_skipped(state, why):
    d = route(v=views(local=state))
    assert (d.primary, d.fallback, d.reason, d.skipped) == ("cloud", None, "unavailable", (("local", why),))
    assert d.reserve == ("local",)  # a later failover may still go there, if it has recovered


def test_only_backends_out_for_their_state_are_held_in_reserve():
    d = route(v=views(local={"context_window": 1000}), f=features(prompt_tokens=50_000))
    assert (d.primary, d.reason, d.reserve) == ("cloud", "context", ())


def test_nothing_available_is_temporary_when_a_backend_only_waits():
    v = views(local={"health": "down"}, cloud={"blocked_until": 42, "blocked_why": "cooling down after 429",
                                               "retry_at": 42})
    d = route(v=v)
    assert isinstance(d, NoRoute) and d.retry_at == 42
    assert d.explain() == "local: down; cloud: cooling down after 429"
    d = route("local_only", v=views(local={"health": "down"}))
    assert isinstance(d, NoRoute) and d.retry_at is None


def test_sticky_beats_the_classifier_but_not_the_hard_rules():
    d = route(cls=COMPLEX_TASK, sticky="local")
    assert (d.primary, d.fallback, d.reason) == ("local", "cloud", "sticky")
    d = route(cls=COMPLEX_TASK, sticky="local", f=features(prompt_tokens=64_000))
    assert (d.primary, d.reason) == ("cloud", "context")
    d = route(cls=SIMPLE_TASK, sticky="local", v=views(local={"breaker": OPEN}))
    assert (d.primary, d.reason) == ("cloud", "unavailable")
    assert route("cloud_only", sticky="local").primary == "cloud"  # a pin beats stickiness


def test_decisions_are_frozen_and_reasons_bounded():
    d = route()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        d.primary = "cloud"  # type: ignore[misc]
    with pytest.raises(ValueError):
        RouteDecision("local", None, "because I said so")
