"""A follow-up turn's new text is bounded, decided on, and counted after the decision: the bounds
always hold, and every decision taken on them is the one the exact count gives."""

from __future__ import annotations

import random
from typing import Any

import attrs
import pytest

from backends import RateLimit
from config.schema import CLOUD_DEFAULT, LOCAL_DEFAULT, RoutingConfig
from routing import NoBackendAvailable, Router, TokenCounter
from routing.features import Features, conversation_key
from routing.tokens import cl100k_bounds
from tests.bench.routing import _Backend, prose

COUNTER = TokenCounter.default()
pytestmark = pytest.mark.skipif(COUNTER.bounds is None, reason="tiktoken's cl100k_base is not available")

# Characters the bounds' proof has to survive: ASCII and Unicode whitespace (some of which
# str.split() treats as space and cl100k does not), digits, letters of several scripts,
# punctuation, apostrophes (the contractions), emoji, and a lone surrogate.
ALPHABET = (" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u2003\u3000\u200b" "0123456789"
            "abcXYZ'sdtmllvere" "éßøДжαλ中文字日本語한국어" "!?.,;:-_()[]{}<>/\\\"#$%^&*+=|~`"
            "😀🚀👍🏽" "\ud800")


def random_text(rng: random.Random, size: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(size))


def test_the_bounds_hold_for_any_text():
    rng = random.Random(1)
    texts = [random_text(rng, rng.randint(1, 400)) for _ in range(3_000)]
    texts += [prose(rng, 4_000), "word " * 1_000, "1234567890" * 100, "\n\n\n" * 50, "<|endoftext|>" * 20]
    for text in texts:
        low, high = cl100k_bounds(text)
        assert low <= COUNTER.count(text) <= high, (text, low, high)


def counters() -> tuple[TokenCounter, TokenCounter]:
    """Two fresh counters with the same count: one with the bounds, which defers a follow-up's
    new text, and one without, which never defers and so decides on the exact count."""
    return (TokenCounter(COUNTER.count, COUNTER.method, COUNTER.bounds), TokenCounter(COUNTER.count, COUNTER.method))


def follow_up(rng: random.Random, size: int) -> list[dict[str, Any]]:
    path = f"src/m{rng.randrange(1000)}.py"
    return [{"role": "assistant", "content": f"<read_file>\n<path>{path}</path>\n</read_file>"},
            {"role": "user", "content": [{"type": "text", "text": f"[read_file for '{path}'] Result:"},
                                         {"type": "text", "text": prose(rng, size)}]}]


def pool(rng: random.Random, needed: int) -> dict[str, _Backend]:
    """Two to four local servers and one or two clouds, whose context windows sit around what the
    conversation needs, so the context rule falls either way."""
    backends = {}
    for i in range(rng.randint(2, 4)):
        window = needed + rng.randint(-3_000, 3_000) if rng.random() < 0.6 else 65_536
        backends[f"local-{i}"] = _Backend(attrs.evolve(LOCAL_DEFAULT, context_window=window, order=i))
    for i in range(rng.randint(1, 2)):
        window = needed + rng.randint(-3_000, 3_000) if rng.random() < 0.3 else 131_072
        backends[f"cloud-{i}"] = _Backend(attrs.evolve(CLOUD_DEFAULT, context_window=window, order=i))
    return backends


def measured(router: Router, rng: random.Random, names: list[str], key: str, now: float, tokens: int) -> None:
    """One state for both routers: speeds near 30 s to first token for this prompt, requests in
    flight, a rate-limit window near empty, a sticky server holding most of the prefix."""
    states = router.states
    for name in names:
        if name.startswith("local") and rng.random() < 0.8:
            tps = tokens / 30.0 * rng.uniform(0.7, 1.6)  # about the default limit of 30 s
            states.speeds[name].observe_timings({"prompt_per_second": tps, "predicted_per_second": 40.0,
                                                 "prompt_n": 500, "cache_n": 0})
        if name.startswith("cloud"):
            states.speeds[name].observe_ttft(rng.uniform(0.2, 2.0))
            if rng.random() < 0.5:
                remaining = tokens + rng.randint(-2_000, 8_000)
                states.rate_limits[name]["tokens_minute"] = RateLimit(1_000_000, remaining, 30.0, now)
        states.in_flight[name] = rng.choice((0, 0, 1, 2))
    if rng.random() < 0.5:
        states.sticky.set(key, rng.choice(names), now, tokens - rng.randint(0, 20_000))


def decided(router: Router, body: dict[str, Any]) -> tuple[tuple[Any, ...], bool]:
    """What the router decided (or why it refused), and whether it decided on the bounds: a
    count still unsettled when the decision is back was never counted for it."""
    try:
        route = router.route(body, "complexity")
    except NoBackendAvailable as exc:
        return ("refused", str(exc)), False
    d, on_bounds = route.decision, not route.features.prompt.settled
    return (d.candidates, d.reason, d.reserve, tuple(name for name, _ in d.skipped), route.classification,
            route.features.prompt_tokens), on_bounds


def test_a_decision_on_the_bounds_is_the_decision_on_the_exact_count():
    rng = random.Random(5)
    on_bounds = exact = 0
    for case in range(120):
        base = [{"role": "system", "content": prose(rng, 3_000)},
                {"role": "user", "content": f"<task>\nfix the parser, case {case}\n</task>"}]
        target = rng.randint(2_000, 40_000)
        while COUNTER.count_messages(base) < target:
            base += follow_up(rng, rng.choice((2_000, 8_000, 20_000)))
        turn = [*base, *follow_up(rng, rng.choice((600, 4_000, 12_000, 40_000)))]
        tokens = COUNTER.count_messages(turn)
        backends = pool(rng, tokens + 4_096)
        cfg = RoutingConfig(max_local_ttft_s=rng.choice((0.0, 30.0)))
        seed = rng.random()
        results = []
        for counter in counters():
            router = Router(backends, cfg, counter, clock=lambda: 1_000.0)
            decided(router, {"model": "glm-4.7", "messages": [dict(m) for m in base]})  # the first turn
            measured(router, random.Random(seed), list(backends), conversation_key(base), 1_000.0, tokens)
            results.append(decided(router, {"model": "glm-4.7", "messages": [dict(m) for m in turn]}))
        (deferred, bounded), (truth, never) = results
        assert deferred == truth, case
        assert not never
        assert truth[0] == "refused" or truth[-1] == tokens
        on_bounds, exact = on_bounds + bounded, exact + (not bounded)
    # Both kinds were exercised. These cases are put near a rule's threshold on purpose (a context
    # window, a rate limit, the TTFT limit), so many are counted first; in the routing benchmark's
    # Cline-shaped turns every follow-up decides on the bounds.
    assert on_bounds >= 25 and exact >= 25, (on_bounds, exact)


def test_features_at_one_end_of_the_bounds_differ_only_in_the_prompt():
    # Features.sized lists the fields by hand (attrs.evolve was a tenth of the decision): a field
    # it forgot would fall back to its default in every decision on bounds.
    fields = {"task_text": "fix it", "task_tokens": 3, "prompt_tokens": 900, "code_blocks": 2, "has_tools": True,
              "has_images": True, "max_tokens": 512, "depth": 4, "conversation_key": "abc", "compaction": True}
    assert {a.alias for a in attrs.fields(Features)} == set(fields)  # every field set, none at its default
    features = Features(**fields)
    assert features.sized(1_234) == attrs.evolve(features, prompt_tokens=1_234)
    assert features.sized(1_234).prompt_tokens == 1_234
