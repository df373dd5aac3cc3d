"""Routing decision time for Cline-shaped conversations, first turn and follow-up turns, and the
learned scorer alone on new tasks.

    python -m tests.bench.routing [--repeat 200]

A decision is everything the gateway does between a parsed request body and the chosen backend:
features (task text, token count, conversation key), the scorer, escalation and the guard, and
policy. "First turn" counts a conversation the gateway has never seen (every message tokenised);
"follow-up" is the same conversation one Cline turn later (an assistant tool call and a ~4 kB
tool result added), which is what every turn after the first costs. A follow-up decides on
proven bounds of the new text's token count when no rule's outcome depends on where in them
the count falls (routing.tokens.PromptCount); the count itself then runs while the upstream
works, and is timed on its own. The scorer alone is timed
on every task of the corpus's test split (terse to 250 words, pasted code and traces), each
scored cold (a new task is never in the classifier's cache).
"""

from __future__ import annotations

import argparse
import gc
import platform
import random
import statistics
import time

import attrs
import orjson

from backends import Capabilities
from config.schema import CLOUD_DEFAULT, LOCAL_DEFAULT, RoutingConfig
from routing import Router, TokenCounter, corpus
from routing.scorer import Scorer

WORDS = ("def class return import self value config request stream token backend cache error "
         "the a of to in is for with on that this it as be are from by or an not but if then").split()


def prose(rng: random.Random, chars: int) -> str:
    out, size = [], 0
    while size < chars:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14)))
        out.append(("    " if rng.random() < 0.5 else "") + line)
        size += len(line) + 5
    return "\n".join(out)


def conversation(tokens: int, rng: random.Random, counter: TokenCounter) -> list[dict]:
    env = "<environment_details>\n# VSCode Visible Files\nsrc/app.py\n# Current Time\n" \
          f"{rng.random()}\n</environment_details>"
    # Cline's system prompt is ~8k tokens; a 1k-token conversation can only hold a small one.
    messages = [{"role": "system", "content": prose(rng, min(30_000, tokens * 2))},
                {"role": "user", "content": [{"type": "text", "text": "<task>\nFix the typo in app.py\n</task>"},
                                             {"type": "text", "text": env}]}]
    while counter.count_messages(messages) < tokens:
        follow_up(messages, rng)
    return messages


def follow_up(messages: list[dict], rng: random.Random) -> None:
    path = f"src/mod_{rng.randrange(10**6)}.py"
    messages.append({"role": "assistant", "content": f"<read_file>\n<path>{path}</path>\n</read_file>"})
    messages.append({"role": "user", "content": [{"type": "text", "text": f"[read_file for '{path}'] Result:"},
                                                 {"type": "text", "text": prose(rng, 4_000)}]})


class _Backend:
    def __init__(self, cfg):
        self.cfg, self.rate_limits, self.tier, self.caps = cfg, {}, cfg.tier, Capabilities.of(cfg)


def pool(size: int) -> dict[str, _Backend]:
    """``size`` backends, half local servers and half a cloud chain (:func:`measure` gives them
    speeds)."""
    if size == 2:
        return {"local": _Backend(LOCAL_DEFAULT), "cloud": _Backend(CLOUD_DEFAULT)}
    half = size // 2
    backends = {f"spark-{i}": _Backend(attrs.evolve(LOCAL_DEFAULT, base_url=f"http://10.0.0.{i}:8080/v1"))
                for i in range(half)}
    backends.update({f"cloud-{i}": _Backend(attrs.evolve(CLOUD_DEFAULT, order=i)) for i in range(size - half)})
    return backends


def measure(router: Router) -> None:
    """Speeds as after a while in service, so the local tier is ordered by predicted time to
    first token and the clouds by their chain: servers of different prefill speeds, one busy."""
    for i, (name, backend) in enumerate(router.backends.items()):
        speed = router.states.speeds[name]
        if backend.tier == "local":
            speed.observe_timings({"prompt_per_second": 2_000.0 + 700 * i, "predicted_per_second": 45.0,
                                   "prompt_n": 2_000, "cache_n": 30_000})
            router.states.in_flight[name] = i % 2
        else:
            speed.observe_ttft(0.3 + 0.1 * i)


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def scorer_times(scorer: Scorer, repeat: int) -> None:
    tasks = [r["task"] for r in corpus.split(corpus.load(), "test")]
    times = []
    for _ in range(max(1, repeat // 20)):
        for task in tasks:
            task = orjson.loads(orjson.dumps(task))  # a fresh string, as from a request body
            t = time.perf_counter()
            scorer.score(task)
            times.append(time.perf_counter() - t)
    longest = max(len(t) for t in tasks)
    print(f"# the scorer alone on {len(tasks)} test-split tasks (up to {longest} characters), {len(times)} runs: "
          f"p50 {1000 * statistics.median(times):.3f} ms, p99 {1000 * percentile(times, 0.99):.3f} ms, "
          f"max {1000 * max(times):.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    rng = random.Random(7)
    sizing = TokenCounter.default()
    scorer = Scorer.load()
    # What the gateway does once it has started (gateway.server.serve): what lives as long as
    # the process (tiktoken's tables, the scorer) is frozen, so the cyclic GC stops walking it.
    # Without it a full collection inside a timed decision measures this script, not routing.
    gc.freeze()
    scorer_times(scorer, args.repeat)
    print(f"# routing decision time  ({platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}, counter {sizing.method}, {args.repeat} runs each)")
    print("# follow-up: the decision; 'on bounds': the share of follow-ups decided on the new text's "
          "bounds; 'then counted': the count that follows the decision, while the upstream works")
    print(f"{'backends':>8} {'conversation':>14} {'messages':>9} {'first p50':>10} {'first p99':>10} "
          f"{'follow-up p50':>14} {'follow-up p99':>14} {'on bounds':>10} {'then counted p50':>17}")
    for size, target in [(n, t) for n in (2, 8) for t in (1_000, 32_000, 128_000)]:
        base = conversation(target, rng, sizing)
        first, later, counted, bounded = [], [], [], 0
        for _ in range(args.repeat):
            router = Router(pool(size), RoutingConfig(), TokenCounter.default(), scorer=scorer)
            measure(router)
            # Every body is freshly parsed JSON, as a request's would be: no string object (and
            # no cached string hash) survives from one turn to the next.
            body = orjson.loads(orjson.dumps({"model": "glm-4.7", "messages": base}))
            t = time.perf_counter()
            router.route(body, "complexity")
            first.append(time.perf_counter() - t)
            follow_up(body["messages"], rng)
            body = orjson.loads(orjson.dumps(body))
            t = time.perf_counter()
            route = router.route(body, "complexity")
            later.append(time.perf_counter() - t)
            bounded += not route.features.prompt.settled
            t = time.perf_counter()
            route.features.prompt.exact()
            counted.append(time.perf_counter() - t)
        tokens = sizing.count_messages(base)
        ms = [1000 * x for x in (statistics.median(first), percentile(first, 0.99),
                                 statistics.median(later), percentile(later, 0.99), statistics.median(counted))]
        print(f"{size:>8} {tokens:>8} tokens {len(base):>9} {ms[0]:>8.2f}ms {ms[1]:>8.2f}ms "
              f"{ms[2]:>12.3f}ms {ms[3]:>12.3f}ms {bounded / args.repeat:>9.0%} {ms[4]:>15.3f}ms")


if __name__ == "__main__":
    main()
