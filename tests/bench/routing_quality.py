"""Routing quality through the real routing path: new-task routing on the held-out test split,
and escalation of replayed agent conversations.

    python -m tests.bench.routing_quality [--split test|dev] [--json PATH] [--concurrency 8]

Everything runs in one process on loopback: both simulators (``LlamaCppSim`` with n_ctx 65536
at full speed, ``CerebrasSim`` with rate limits no run can reach), the real gateway app from
``create_app(cfg)`` served by ``web.AppRunner``/``TCPSite``, and the official ``openai``
client (``AsyncOpenAI``, ``max_retries=0``, non-streaming, ``max_tokens`` 32). The config is
``GatewayConfig()`` with the backends pointed at the simulators, a ledger in a temporary
directory and one change that is not routing: ``limits.requests_per_minute_per_key`` raised,
because the bench is one client sending thousands of requests a minute. Routing is the default
(``routing.classifier.method: learned``, escalation window 4, 2 signals) unless a row says
otherwise. The route is read from the response headers ``x-glm-backend`` and
``x-glm-route-reason``; nothing inside the gateway is called.

**Part 1, new tasks.** Every task of the corpus's *test* split (``routing/data/tasks.jsonl``) is
sent as a new Cline task in two shapes (:mod:`tests.bench.cline_shapes`): the classic extension
(long XML-tools system prompt, ``<task>`` and ``<environment_details>`` parts, no ``tools``) and
the Cline CLI (the captured request-1 with its task replaced, every other one wrapped in
``<user_input mode="act">``, the ``[SYSTEM]`` reminder and the four native tools kept), and as a
new Claude Code session (:mod:`tests.bench.claude_shapes`) through ``POST /v1/messages`` with the
official ``anthropic`` client (``AsyncAnthropic``), model ``claude-sonnet-4-5-20250929``, which
the default ``claude-*`` alias routes like ``glm-4.7``: three system blocks (a billing header
whose ``cch`` changes per request, the identity line, the instructions), seven tools, and the
task after the claudeMd and todo ``<system-reminder>`` blocks. Each task's two background
requests on Claude Code's small model (title, new topic) go through a gateway of their own and
should stay local (``claude-*haiku*`` → ``local_first``). The test
split is held out: ``python -m routing.train`` never reads it, nothing was tuned on it, and this
bench only reads it. A task counts as "cloud" when ``x-glm-backend`` says so; a complex label
should go to the cloud, a simple one stay local. The same tasks go through the old keyword
classifier (``method: keywords``) and through always-local, each on a fresh gateway, so the
figures compare like for like. ``--split dev`` is for comparison only: the shipped model was
fitted on train + dev, so its dev figures are in-sample.

**Part 2, escalation replay.** Agent conversations are replayed turn by turn (each request
carries the history so far) through the routed model ``glm-4.7``, in both Cline shapes, and in
Claude Code's (Anthropic ``tool_use``/``tool_result`` blocks, reminders after the results; its
failing conversations get ``is_error`` results with Claude Code's ``<tool_use_error>`` texts,
its healthy ones Bash ``Exit code N`` failures and the tag quoted inside Read, Grep and Bash
output; it reuses the Cline CLI's tasks, on a gateway of its own). The bench
writes the agent's side (assistant tool calls and Cline's feedback); the backends' answers are
the simulators' canned text and are not fed back, except in the runaway loop. Each
conversation starts with an easy task from the corpus's *train* split, so its first turns
route local. Failing conversations feed Cline's own failure texts back where Cline puts them;
healthy ones carry the same texts inside file contents, command output and diffs, and at most
one isolated mistake followed by recovery. The expected escalation request is computed here
from how each conversation was built (the first request whose last ``window`` feedback turns
hold ``signals`` turns with a failure text, or one "You seem to be having trouble proceeding"),
and compared with the first request answered with ``x-glm-route-reason: escalated``. Last, a
Cline CLI runaway loop (text-only answers, each followed by the ``[SYSTEM]`` reminder, 30
requests; the answers fed back are the gateway's own) shows where the loop escalates, where the
runaway guard refuses it, and what it cost. After a refusal the replay keeps going, like an
agent that ignores the error, and prints each status.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import anthropic
import attrs
import openai
from aiohttp import web

from backends.sim import CerebrasSim, LlamaCppSim, Script
from config import GatewayConfig
from config.routing import EscalationConfig
from gateway.app import create_app
from routing import TokenCounter, corpus
from routing.scorer import Scorer
from tests.bench import claude_shapes as claude
from tests.bench import cline_shapes as shapes

CLOUD_KEY = "csk-bench-routing-quality-0123456789"
LOCAL_SCRIPT = Script(content="I will read the file first.")
CLOUD_SCRIPT = Script(content="Reading the configuration now.")
MAX_TOKENS = 32
MODEL = "glm-4.7"
SHAPES = ("classic", "cli", "claude")
SHAPE_NAMES = {"classic": "classic Cline", "cli": "Cline CLI", "claude": "Claude Code"}
FAILING_PER_SHAPE = 48
HEALTHY_PER_SHAPE = 48
RUNAWAY_REQUESTS = 30


# --- harness ---------------------------------------------------------------------------------------
class _Forgetful(list):
    """The simulators' request log, which only tests read: here it would only grow the heap."""

    def append(self, item: object) -> None:
        pass


class LogTally(logging.Handler):
    """Counts the gateway's warnings and errors (and keeps the first few), so they are reported
    in the summary instead of scrolling past on stderr."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: collections.Counter[str] = collections.Counter()
        self.first: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        key = f"{record.levelname} {record.name}"
        self.counts[key] += 1
        if key not in self.first:
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                text += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
            self.first[key] = text[:300]


def make_config(local_url: str, cloud_url: str, ledger: Path, *, method: str | None = None,
                strategy: str | None = None) -> GatewayConfig:
    cfg = GatewayConfig()
    backends = {**cfg.backends,  # a mapping of named backends (config.backends)
                "local": attrs.evolve(cfg.backends["local"], base_url=local_url),
                "cloud": attrs.evolve(cfg.backends["cloud"], base_url=cloud_url, api_key=CLOUD_KEY)}
    routing = cfg.routing
    if method is not None:
        routing = attrs.evolve(routing, classifier=attrs.evolve(routing.classifier, method=method))
    if strategy is not None:
        routing = attrs.evolve(routing, strategy=strategy)
    return attrs.evolve(
        cfg, backends=backends, routing=routing,
        # Not routing: one client sends thousands of requests a minute here.
        limits=attrs.evolve(cfg.limits, requests_per_minute_per_key=10**9),
        ledger=attrs.evolve(cfg.ledger, path=str(ledger)),
        logging=attrs.evolve(cfg.logging, file=""))


@attrs.define
class Gateway:
    base: str
    client: openai.AsyncOpenAI
    http: aiohttp.ClientSession
    claude: anthropic.AsyncAnthropic

    async def stats(self) -> dict[str, Any]:
        """``GET /stats``'s ``since_start`` window, or zeros if the gateway cannot say (reported, not fatal)."""
        try:
            async with self.http.get(self.base + "/stats") as resp:
                window = (await resp.json()).get("since_start") or {}
        except (aiohttp.ClientError, ValueError) as exc:
            print(f"!! GET /stats failed: {exc}")
            window = {}
        cloud = (window.get("backends") or {}).get("cloud") or {}
        return {"savings_usd": 0.0, "all_cloud_cost_usd": 0.0, "savings_pct": 0.0, "requests": 0,
                "requests_by_backend": {}, "statuses": {}, **window,
                "cloud": {"cost_usd": cloud.get("cost_usd", 0.0),
                          "tokens": cloud.get("tokens") or {"prompt": 0, "completion": 0}}}


@contextlib.asynccontextmanager
async def running_gateway(cfg: GatewayConfig, counter: TokenCounter) -> AsyncIterator[Gateway]:
    runner = web.AppRunner(create_app(cfg, token_counter=counter), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    client = openai.AsyncOpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=60.0)
    messages_client = anthropic.AsyncAnthropic(base_url=base, api_key="unused", max_retries=0, timeout=60.0)
    try:
        async with aiohttp.ClientSession() as http:
            yield Gateway(base, client, http, messages_client)
    finally:
        await client.close()
        await messages_client.close()
        await runner.cleanup()


@attrs.define
class Answer:
    status: int  # 0: no HTTP answer at all
    backend: str | None = None
    reason: str | None = None
    content: str | None = None
    error: str | None = None
    should_retry: str | None = None

    @property
    def cloud(self) -> bool:
        return self.backend == "cloud"


async def send(gw: Gateway, body: dict[str, Any]) -> Answer:
    """One non-streaming request with the official client; the route from the headers."""
    kwargs: dict[str, Any] = {"model": body.get("model", MODEL), "messages": body["messages"], "max_tokens": MAX_TOKENS}
    if body.get("tools"):
        kwargs["tools"] = body["tools"]
        kwargs["tool_choice"] = body.get("tool_choice", "auto")
    try:
        raw = await gw.client.chat.completions.with_raw_response.create(**kwargs)
    except openai.APIStatusError as exc:
        h = exc.response.headers
        error = exc.body if isinstance(exc.body, dict) else {"message": exc.message}
        text = json.dumps({k: error.get(k) for k in ("message", "type", "code") if k in error})
        return Answer(exc.status_code, h.get("x-glm-backend"), h.get("x-glm-route-reason"),
                      error=text[:400], should_retry=h.get("x-should-retry"))
    except openai.APIError as exc:
        return Answer(0, error=f"{type(exc).__name__}: {exc}"[:300])
    completion = raw.parse()
    content = completion.choices[0].message.content if completion.choices else None
    return Answer(200, raw.headers.get("x-glm-backend"), raw.headers.get("x-glm-route-reason"), content)


async def send_messages(gw: Gateway, body: dict[str, Any]) -> Answer:
    """The same through ``POST /v1/messages`` with the official ``anthropic`` client (Claude Code's shape)."""
    body = dict(body)
    # Claude Code sends temperature (1 on the main loop, 0 on haiku's); this SDK has no argument for it.
    extra = {k: body.pop(k) for k in ("temperature",) if k in body}
    try:
        raw = await gw.claude.messages.with_raw_response.create(**body, extra_body=extra or None)
    except anthropic.APIStatusError as exc:
        h = exc.response.headers
        error = (exc.body or {}).get("error") if isinstance(exc.body, dict) else None
        text = json.dumps(error or {"message": exc.message})
        return Answer(exc.status_code, h.get("x-glm-backend"), h.get("x-glm-route-reason"), error=text[:400],
                      should_retry=h.get("x-should-retry"))
    except anthropic.APIError as exc:
        return Answer(0, error=f"{type(exc).__name__}: {exc}"[:300])
    message = await raw.parse()
    content = next((b.text for b in message.content if b.type == "text"), None)
    return Answer(200, raw.headers.get("x-glm-backend"), raw.headers.get("x-glm-route-reason"), content)


def sender(shape: str) -> Any:
    return send_messages if shape == "claude" else send


async def bounded(n: int, jobs: list[Any]) -> list[Any]:
    """Run coroutines with at most ``n`` in flight, results in order."""
    gate = asyncio.Semaphore(n)

    async def one(job: Any) -> Any:
        async with gate:
            return await job

    return await asyncio.gather(*(one(j) for j in jobs))


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def share(a: int, b: int) -> float:
    return a / b if b else 0.0


# --- part 1: new tasks ---------------------------------------------------------------------------
CONFIGS = (  # (name, classifier method, strategy)
    ("learned (default)", None, None),
    ("keywords (before)", "keywords", None),
    ("always local", None, "local_only"),
)


def first_request(shape: str, row: dict[str, Any], i: int) -> dict[str, Any]:
    if shape == "claude":  # model claude-sonnet-4-5-20250929: the claude-* alias routes it like glm-4.7
        return claude.first_request(row["task"], i, MAX_TOKENS)
    if shape == "classic":
        return {"model": MODEL, "messages": shapes.classic_first_messages(row["task"], row.get("stack"))}
    body = shapes.cli_body(row["task"], wrap=i % 2 == 1)
    body["model"] = MODEL
    return body


def summarise(rows: list[dict[str, Any]], answers: list[Answer]) -> dict[str, Any]:
    matrix = {"simple": {"local": 0, "cloud": 0}, "complex": {"local": 0, "cloud": 0}}
    by: dict[str, dict[str, dict[str, int]]] = {tag: collections.defaultdict(lambda: collections.Counter())
                                                for tag in ("adversarial", "kind")}
    failed, reasons, fallback_to = 0, collections.Counter(), collections.Counter()
    for row, ans in zip(rows, answers, strict=True):
        if ans.status != 200:
            failed += 1
            continue
        reasons[ans.reason] += 1
        if ans.reason == "fallback":
            fallback_to[ans.backend] += 1
        route = "cloud" if ans.cloud else "local"
        matrix[row["label"]][route] += 1
        wrong = (row["label"] == "complex") != ans.cloud
        for tag in by:
            c = by[tag][str(row.get(tag))]
            c["n"] += 1
            c["errors"] += wrong
            c["complex_local"] += wrong and row["label"] == "complex"
            c["simple_cloud"] += wrong and row["label"] == "simple"
    n = sum(sum(v.values()) for v in matrix.values())
    cn, sn = sum(matrix["complex"].values()), sum(matrix["simple"].values())
    return {
        "n": n, "failed_requests": failed, "route_reasons": dict(reasons), "fallback_to": dict(fallback_to),
        "confusion": matrix,
        "agreement": share(matrix["complex"]["cloud"] + matrix["simple"]["local"], n),
        "complex_local": share(matrix["complex"]["local"], cn),
        "simple_cloud": share(matrix["simple"]["cloud"], sn),
        "errors_by": {tag: {k: dict(v) for k, v in sorted(vals.items())} for tag, vals in by.items()},
    }


async def part1_run(sims: tuple[LlamaCppSim, CerebrasSim], counter: TokenCounter, tmp: Path, rows: list[dict],
                    shape: str, method: str | None, strategy: str | None, concurrency: int) -> dict[str, Any]:
    ledger = tmp / f"p1-{shape}-{method or 'learned'}-{strategy or 'complexity'}.sqlite3"
    cfg = make_config(sims[0].url, sims[1].url, ledger, method=method, strategy=strategy)
    async with running_gateway(cfg, counter) as gw:
        send_one = sender(shape)
        answers = await bounded(concurrency, [send_one(gw, first_request(shape, r, i)) for i, r in enumerate(rows)])
        window = await gw.stats()
    out = summarise(rows, answers)
    # Savings against always-cloud, from the gateway's own ledger (/stats, since_start): what the
    # tasks that local served would have cost at Cerebras's prices ($2.25/M prompt, $2.75/M
    # completion), as a share of what all of them would have cost on the cloud. The token counts
    # are the simulators' (prompt = characters of message text / 4, tool schemas not counted;
    # completion <= 32), so the dollars are small and only the share means anything: it is the
    # share of the prompt tokens of these first turns that stayed local.
    out["savings"] = {"savings_usd": window["savings_usd"], "all_cloud_cost_usd": window["all_cloud_cost_usd"],
                      "savings_pct": window["savings_pct"], "requests": window["requests"]}
    return out


async def background_run(sims: tuple[LlamaCppSim, CerebrasSim], counter: TokenCounter, tmp: Path, rows: list[dict],
                         concurrency: int) -> dict[str, dict[str, int]]:
    """Claude Code's side requests on the small model for every task (title, new topic), on a
    gateway of their own: the ``claude-*haiku*`` alias serves them ``local_first``."""
    cfg = make_config(sims[0].url, sims[1].url, tmp / "p1-claude-haiku.sqlite3")
    bodies = [(kind, b) for i, r in enumerate(rows) for kind, b in claude.background(r["task"], i, MAX_TOKENS).items()]
    async with running_gateway(cfg, counter) as gw:
        answers = await bounded(concurrency, [send_messages(gw, b) for _, b in bodies])
    out: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for (kind, _), ans in zip(bodies, answers, strict=True):
        out[kind]["n"] += 1
        out[kind][ans.backend if ans.status == 200 else f"HTTP {ans.status}"] += 1
        out[kind][f"reason {ans.reason}"] += 1
    return {k: dict(v) for k, v in out.items()}


def print_background(result: dict[str, dict[str, int]]) -> None:
    print(f"\nClaude Code background requests ({claude.HAIKU}; models.aliases `claude-*haiku*` → local_first), "
          "one of each per task:\n")
    for kind, c in result.items():
        rest = ", ".join(f"{k} {v}" for k, v in sorted(c.items()) if k not in ("n", "local", "cloud"))
        print(f"- {kind}: {c['n']} requests, local {c.get('local', 0)}, cloud {c.get('cloud', 0)} ({rest})")


def print_part1(split: str, rows: list[dict], results: dict[str, dict[str, dict]]) -> dict[str, Any]:
    labels = collections.Counter(r["label"] for r in rows)
    print(f"\n## Part 1: new tasks, {split} split ({len(rows)} tasks: {labels['complex']} complex, "
          f"{labels['simple']} simple)"
          + ("; held out: never trained or tuned on" if split == "test"
             else "; in-sample: the model was fitted on train + dev") + "\n")
    print("| classifier | shape | n | agreement | complex→local | simple→cloud | savings vs always-cloud | "
          "route reasons | failed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, per_shape in results.items():
        for shape, r in per_shape.items():
            s = r["savings"]
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(r["route_reasons"].items()))
            print(f"| {name} | {SHAPE_NAMES[shape]} | {r['n']} | {pct(r['agreement'])} | {pct(r['complex_local'])} | "
                  f"{pct(r['simple_cloud'])} | {s['savings_pct']:.1f}% (${s['savings_usd']:.4f} of "
                  f"${s['all_cloud_cost_usd']:.4f}) | {reasons} | {r['failed_requests']} |")
    diffs: dict[str, dict[str, float]] = {}
    print("\nShapes agree (agreement points; Cline shapes within 2, Claude Code within 1 of each):")
    for name, per_shape in results.items():
        a = {s: 100 * r["agreement"] for s, r in per_shape.items()}
        d = diffs[name] = {"classic-cli": round(a["classic"] - a["cli"], 2),
                           "claude-cli": round(a["claude"] - a["cli"], 2),
                           "claude-classic": round(a["claude"] - a["classic"], 2)}
        ok = abs(d["classic-cli"]) <= 2 and abs(d["claude-cli"]) <= 1 and abs(d["claude-classic"]) <= 1
        print(f"- {name}: classic − CLI {d['classic-cli']:+.1f}, Claude Code − CLI {d['claude-cli']:+.1f}, "
              f"Claude Code − classic {d['claude-classic']:+.1f}: {'yes' if ok else 'NO'}")
    print("\nConfusion matrices (rows: label; columns: route):\n")
    print("| classifier | shape | simple→local | simple→cloud | complex→local | complex→cloud |")
    print("|---|---|---|---|---|---|")
    for name, per_shape in results.items():
        for shape, r in per_shape.items():
            m = r["confusion"]
            print(f"| {name} | {SHAPE_NAMES[shape]} | {m['simple']['local']} | {m['simple']['cloud']} | "
                  f"{m['complex']['local']} | {m['complex']['cloud']} |")
    compared = [n for n in results if n != "always local"]  # always-local's errors are simply the complex tasks
    for tag in ("adversarial", "kind"):
        print(f"\nErrors by `{tag}` (errors / n; c→l = complex sent local, s→c = simple sent cloud):\n")
        cols = [(name, shape) for name in compared for shape in SHAPES]
        print(f"| {tag} | n | " + " | ".join(f"{name.split()[0]} {SHAPE_NAMES[s]}" for name, s in cols) + " |")
        print("|---|---|" + "---|" * len(cols))
        values = sorted({v for name, s in cols for v in results[name][s]["errors_by"][tag]})
        for v in values:
            cells = []
            n = 0
            for name, s in cols:
                c = results[name][s]["errors_by"][tag].get(v, {})
                n = max(n, c.get("n", 0))
                cells.append(f"{c.get('errors', 0)} ({pct(share(c.get('errors', 0), c.get('n', 0)))}; "
                             f"c→l {c.get('complex_local', 0)}, s→c {c.get('simple_cloud', 0)})")
            print(f"| {v} | {n} | " + " | ".join(cells) + " |")
    return diffs


# --- part 2: escalation replay -------------------------------------------------------------------
@attrs.define
class Conversation:
    name: str
    shape: str
    failing: bool
    variant: str
    prefix: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    turns: list[shapes.Turn]
    expected: int | None  # request index (0 = the first request) that should escalate


def expected_escalation(turns: list[shapes.Turn], cfg: EscalationConfig) -> int | None:
    """From the construction: request ``i`` carries turns[:i]; it escalates when its last
    ``window`` feedback turns hold ``signals`` turns with a failure text, or an alarm."""
    for i in range(1, len(turns) + 1):
        recent = turns[max(0, i - cfg.window):i]
        if any(t.alarm for t in recent) or sum(t.signal for t in recent) >= cfg.signals:
            return i
    return None


CLASSIC_VARIANTS = ("FF", "FHF", "FHHF", "FHHHFHF", "HA", "FHHHHX", "FFF", "FHFHF")
CLI_VARIANTS = ("FF", "FHF", "FHHF", "FHHHFHF", "TT", "MHHM", "FHHHHTF", "FHFHF")
CLAUDE_VARIANTS = ("FF", "FHF", "FHHF", "FHHHFHF", "MHHM", "FHHHHMF", "FFF", "FHFHF")  # no alarm, no text-only rule


def replay_tasks(n: int) -> list[dict[str, Any]]:
    """Easy tasks from the train split that the shipped scorer rates well below its threshold,
    so the replayed conversations start on local (escalation is what moves them)."""
    scorer = Scorer.load()
    pool = [r for r in corpus.split(corpus.load(), "train")
            if r["label"] == "simple" and r.get("adversarial") == "none" and len(r["task"]) < 400]
    pool = [r for r in pool if scorer.score(r["task"], top=0).probability < scorer.threshold / 2]
    random.Random(11).shuffle(pool)
    if len(pool) < n:
        raise SystemExit(f"only {len(pool)} easy train tasks, {n} needed")
    return pool[:n]


def build_conversations(shape: str, tasks: list[dict[str, Any]], cfg: EscalationConfig) -> list[Conversation]:
    out = []
    rng = random.Random(f"routing-quality-{shape}")
    variants = {"classic": CLASSIC_VARIANTS, "cli": CLI_VARIANTS, "claude": CLAUDE_VARIANTS}[shape]
    builder = {"classic": shapes.ClassicTurns, "cli": shapes.CliTurns, "claude": claude.ClaudeTurns}[shape]
    for k, row in enumerate(tasks):
        failing = k < FAILING_PER_SHAPE
        b = builder(rng, row.get("stack"))
        if shape == "classic":
            prefix, tools = shapes.classic_first_messages(row["task"], row.get("stack")), None
        elif shape == "claude":  # Anthropic messages; the system blocks are added per request
            prefix, tools = [claude.first_user(row["task"])], claude.tools()
        else:
            body = shapes.cli_body(row["task"], wrap=k % 2 == 1)
            prefix, tools = body["messages"], body["tools"]
        turns: list[shapes.Turn] = []
        if failing:
            variant = variants[k % len(variants)]
            turns += [b.healthy(tricky=rng.random() < 0.3) for _ in range(rng.randint(0, 7))]
            for token in variant:
                if token == "F":
                    turns.append(b.failure())
                elif token == "H":
                    turns.append(b.healthy(tricky=rng.random() < 0.3))
                elif token == "A":
                    turns.append(b.too_many_mistakes())
                elif token == "X":
                    turns.append(b.too_many_mistakes(after_failure=True))
                elif token == "T":
                    turns.append(b.text_only())
                elif token == "M":
                    turns.append(b.mixed_failed())
            turns += [b.failure() if rng.random() < 0.5 else b.healthy() for _ in range(2)]  # after it
        else:
            length = rng.randint(10, 30)
            variant = "healthy"
            tricky_at = set(rng.sample(range(length), 3))
            mistake = rng.randrange(1, length - 2) if k % 2 == 0 else None
            if mistake is not None:
                variant = "healthy, one mistake"
            for i in range(length):
                if i == mistake:
                    turns.append(b.failure())
                else:
                    turns.append(b.healthy(tricky=i in tricky_at))
            assert sum(t.signal for t in turns) <= 1
        expected = expected_escalation(turns, cfg)
        assert (expected is not None) == failing, (shape, k, variant)
        out.append(Conversation(f"{shape}-{k:02d}", shape, failing, variant, prefix, tools, turns, expected))
    return out


@attrs.define
class Replayed:
    conversation: Conversation
    answers: list[Answer]

    @property
    def first_escalated(self) -> int | None:
        return next((i for i, a in enumerate(self.answers) if a.reason == "escalated"), None)


async def replay(gw: Gateway, conv: Conversation) -> Replayed:
    messages = list(conv.prefix)
    answers: list[Answer] = []
    for i in range(len(conv.turns) + 1):
        if i:
            turn = conv.turns[i - 1]
            messages += [turn.assistant, *turn.feedback]
        body: dict[str, Any] = {"model": MODEL, "messages": messages}
        if conv.shape == "claude":  # a fresh billing-header cch on every request, as Claude Code sends
            body = claude.request(messages, random.Random(f"{conv.name}-{i}"), conv.name, MAX_TOKENS)
        elif conv.tools:
            body["tools"], body["tool_choice"] = conv.tools, "auto"
        answers.append(await sender(conv.shape)(gw, body))
        escalated = next((j for j, a in enumerate(answers) if a.reason == "escalated"), None)
        if conv.failing and escalated is not None and i >= max(escalated, conv.expected or 0) + 1:
            break  # one more request after it shows whether it stays escalated
    return Replayed(conv, answers)


def summarise_replay(done: list[Replayed]) -> dict[str, Any]:
    failing = [r for r in done if r.conversation.failing]
    healthy = [r for r in done if not r.conversation.failing]
    exact = late = early = never = baseline_cloud = not_sticky = pre_cloud = 0
    mismatches = []
    offsets, at_request = collections.Counter(), collections.Counter()
    for r in failing:
        exp, got = r.conversation.expected, r.first_escalated
        if r.answers[0].backend != "local":
            baseline_cloud += 1
        if any(a.backend != "local" for a in r.answers[:min(exp, got if got is not None else exp)]):
            pre_cloud += 1
        if got is None:
            never += 1
        elif got == exp:
            exact += 1
        elif got > exp:
            late += 1
        else:
            early += 1
        if got is not None:
            offsets[got - exp] += 1
            at_request[got + 1] += 1
            if any(a.reason != "escalated" or not a.cloud for a in r.answers[got:]):
                not_sticky += 1
        if got != exp:
            mismatches.append({"conversation": r.conversation.name, "variant": r.conversation.variant,
                               "expected_request": exp + 1, "escalated_request": None if got is None else got + 1,
                               "turn_kinds": [t.kind for t in r.conversation.turns[:max(exp, got or 0)]]})
    h_escalated = sum(1 for r in healthy if r.first_escalated is not None)
    h_left_local = sum(1 for r in healthy if any(a.backend != "local" for a in r.answers))
    statuses = collections.Counter(a.status for r in done for a in r.answers)
    nf, nh = len(failing), len(healthy)
    return {
        "failing": {"n": nf, "escalated": share(nf - never, nf), "exact": share(exact, nf), "late": late,
                    "early": early, "never": never, "offsets": {str(k): v for k, v in sorted(offsets.items())},
                    "escalated_at_request": {str(k): v for k, v in sorted(at_request.items())},
                    "first_request_not_local": baseline_cloud, "left_local_before_escalation": pre_cloud,
                    "not_sticky_after_escalation": not_sticky,
                    "requests": sum(len(r.answers) for r in failing), "mismatches": mismatches},
        "healthy": {"n": nh, "escalated": h_escalated, "left_local": h_left_local,
                    "with_one_mistake": sum(1 for r in healthy if "mistake" in r.conversation.variant),
                    "turns": sum(len(r.conversation.turns) for r in healthy),
                    "tricky_turns": sum(t.tricky for r in healthy for t in r.conversation.turns),
                    "turn_kinds": dict(collections.Counter(t.kind for r in healthy for t in r.conversation.turns)),
                    "requests": sum(len(r.answers) for r in healthy)},
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


async def part2_shape(sims: tuple[LlamaCppSim, CerebrasSim], counter: TokenCounter, tmp: Path, shape: str,
                      tasks: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    cfg = make_config(sims[0].url, sims[1].url, tmp / f"p2-{shape}.sqlite3")
    conversations = build_conversations(shape, tasks, cfg.routing.escalation)
    async with running_gateway(cfg, counter) as gw:
        done = await bounded(concurrency, [replay(gw, c) for c in conversations])
    return summarise_replay(done)


async def runaway(sims: tuple[LlamaCppSim, CerebrasSim], counter: TokenCounter, tmp: Path,
                  task: dict[str, Any]) -> dict[str, Any]:
    """The Cline CLI loop: a text-only answer, the [SYSTEM] reminder, again, 30 requests."""
    cfg = make_config(sims[0].url, sims[1].url, tmp / "runaway.sqlite3")
    body = shapes.cli_body(task["task"])
    body["model"] = MODEL
    messages = body["messages"]
    answers: list[Answer] = []
    last_text = "I have made the change."
    async with running_gateway(cfg, counter) as gw:
        for i in range(RUNAWAY_REQUESTS):
            if i:
                # The agent's side: what the model last answered (text, no tool call), then the reminder.
                messages += [{"role": "assistant", "content": last_text},
                             {"role": "user", "content": shapes.CLI_REMINDER}]
            ans = await send(gw, {**body, "messages": messages})
            answers.append(ans)
            if ans.status == 200 and ans.content:
                last_text = ans.content
        window = await gw.stats()
    g = cfg.routing.guard
    loop_turns = [shapes.Turn({}, [], "text_only", signal=True) for _ in range(RUNAWAY_REQUESTS - 1)]
    expected = expected_escalation(loop_turns, cfg.routing.escalation)
    escalated = next((i for i, a in enumerate(answers) if a.reason == "escalated"), None)
    refused = next((i for i, a in enumerate(answers) if a.status != 200), None)
    return {
        "requests": len(answers), "expected_escalation_request": None if expected is None else expected + 1,
        "escalated_request": None if escalated is None else escalated + 1,
        "refused_request": None if refused is None else refused + 1,
        # The guard counts failed turns after the escalating one; the repeat rule comes later here,
        # since the answers fed back change when the cloud takes over.
        "expected_refusal_request": None if expected is None else expected + 1 + g.signals_after_escalation,
        "refused_status": None if refused is None else answers[refused].status,
        "refused_should_retry": None if refused is None else answers[refused].should_retry,
        "refused_error": None if refused is None else answers[refused].error,
        "statuses": [a.status for a in answers], "backends": [a.backend for a in answers],
        "reasons": [a.reason for a in answers],
        "cloud_cost_usd": window["cloud"]["cost_usd"],
        "cloud_tokens": window["cloud"]["tokens"],
        "requests_by_backend": window["requests_by_backend"], "ledger_statuses": window["statuses"],
        "guard": {"signals_after_escalation": g.signals_after_escalation, "repeats": g.repeats, "pause_s": g.pause_s},
    }


def print_part2(per_shape: dict[str, dict[str, Any]], loop: dict[str, Any], cfg: EscalationConfig) -> None:
    print(f"\n## Part 2: escalation replay (window {cfg.window}, {cfg.signals} signals, alarms "
          f"{', '.join(cfg.alarms)})\n")
    print("| shape | failing convs | escalated | at the expected request | late | early | never | "
          "healthy convs (one mistake) | healthy escalated | healthy ever off local | requests |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for shape, r in per_shape.items():
        f, h = r["failing"], r["healthy"]
        print(f"| {SHAPE_NAMES[shape]} | {f['n']} | {pct(f['escalated'])} | {pct(f['exact'])} | {f['late']} | "
              f"{f['early']} | {f['never']} | {h['n']} ({h['with_one_mistake']}) | {h['escalated']} | "
              f"{h['left_local']} | {f['requests'] + h['requests']} |")
    for shape, r in per_shape.items():
        f, h = r["failing"], r["healthy"]
        if h["escalated"]:
            print(f"\n!! {h['escalated']} healthy {SHAPE_NAMES[shape]} conversations escalated (must be 0)")
        print(f"\n{SHAPE_NAMES[shape]}: escalation offset (request escalated − expected): {f['offsets'] or '{}'}; "
              f"first request not local: {f['first_request_not_local']}; left local before escalating: "
              f"{f['left_local_before_escalation']}; not on the cloud after escalating: "
              f"{f['not_sticky_after_escalation']}; escalated at request (1-based): {f['escalated_at_request']}; "
              f"healthy: {h['turns']} turns, {h['tricky_turns']} with the agent's error texts inside data, "
              f"turn kinds {h['turn_kinds']}; HTTP statuses: {r['statuses']}")
        for m in f["mismatches"][:8]:
            print(f"  - {m['conversation']} ({m['variant']}): expected request {m['expected_request']}, "
                  f"escalated at {m['escalated_request']}; turns {', '.join(m['turn_kinds'])}")
    print(f"\n### Cline CLI runaway loop ({loop['requests']} requests: text-only answer + [SYSTEM] reminder)\n")
    print(f"- escalated at request {loop['escalated_request']} (expected {loop['expected_escalation_request']})")
    if loop["refused_request"] is None:
        print("- never refused")
    else:
        print(f"- refused from request {loop['refused_request']} (expected {loop['expected_refusal_request']}): "
              f"HTTP {loop['refused_status']}, x-should-retry: {loop['refused_should_retry']}, "
              f"error body: {loop['refused_error']}")
    print(f"- guard: signals_after_escalation {loop['guard']['signals_after_escalation']}, repeats "
          f"{loop['guard']['repeats']}, pause {loop['guard']['pause_s']:.0f}s")
    print(f"- statuses: {' '.join(map(str, loop['statuses']))}")
    print(f"- backends: {' '.join(str(b or '-') for b in loop['backends'])}")
    print(f"- simulated cloud spend (/stats since_start): ${loop['cloud_cost_usd']:.6f} "
          f"({loop['cloud_tokens']['prompt']} prompt + {loop['cloud_tokens']['completion']} completion tokens); "
          f"requests by backend {loop['requests_by_backend']}; ledger statuses {loop['ledger_statuses']}")


# --- main ------------------------------------------------------------------------------------------
async def main(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    tally = LogTally()
    logging.getLogger().addHandler(tally)
    logging.getLogger().setLevel(logging.WARNING)
    counter = TokenCounter.default()
    # The simulator closes the socket after every stream, as llama-server does: before the gateway
    # stopped pooling llama.cpp sockets, that sent 0-14 of 179 first turns to the cloud here.
    # The "fallback" column counts any such request: it is cloud spend the classifier did not choose.
    local = LlamaCppSim(LOCAL_SCRIPT, tokens_per_s=None, n_ctx=65536, n_slots=32)
    cloud = CerebrasSim(CLOUD_SCRIPT, tokens_per_s=None, api_key=CLOUD_KEY, rate_limit_tokens_per_minute=10**12,
                        rate_limit_requests_per_day=10**9)
    local.requests = cloud.requests = _Forgetful()
    await local.start()
    await cloud.start()
    sims = (local, cloud)
    report: dict[str, Any] = {"split": args.split}
    print(f"# routing quality ({platform.machine()}, {sys.platform}, Python {platform.python_version()}, "
          f"openai {openai.__version__}, token counter {counter.method})")
    try:
        with tempfile.TemporaryDirectory(prefix="glm-routing-quality-") as tmpdir:
            tmp = Path(tmpdir)
            rows = corpus.split(corpus.load(), args.split)
            part1: dict[str, dict[str, dict]] = {}
            t0 = time.perf_counter()
            for name, method, strategy in CONFIGS:
                part1[name] = {}
                for shape in SHAPES:
                    part1[name][shape] = await part1_run(sims, counter, tmp, rows, shape, method, strategy,
                                                         args.concurrency)
            diffs = print_part1(args.split, rows, part1)
            background = await background_run(sims, counter, tmp, rows, args.concurrency)
            print_background(background)
            print(f"\n(part 1: {time.perf_counter() - t0:.1f}s)")
            report["part1"] = {"tasks": len(rows), "results": part1, "shape_difference_points": diffs,
                               "claude_code_background": background}

            t0 = time.perf_counter()
            escalation = GatewayConfig().routing.escalation
            per = FAILING_PER_SHAPE + HEALTHY_PER_SHAPE
            tasks = replay_tasks(2 * per + 1)  # the pool has 241 easy tasks: Claude Code reuses the CLI's
            per_shape = {}
            for j, shape in enumerate(SHAPES):
                chunk = tasks[min(j, 1) * per:(min(j, 1) + 1) * per]  # each shape on its own gateway
                per_shape[shape] = await part2_shape(sims, counter, tmp, shape, chunk, args.concurrency)
            loop = await runaway(sims, counter, tmp, tasks[-1])
            print_part2(per_shape, loop, escalation)
            print(f"\n(part 2: {time.perf_counter() - t0:.1f}s)")
            report["part2"] = {"shapes": per_shape, "runaway": loop,
                               "escalation": {"window": escalation.window, "signals": escalation.signals,
                                              "alarms": list(escalation.alarms)}}
    finally:
        await local.stop()
        await cloud.stop()
        logging.getLogger().removeHandler(tally)
    report["gateway_log"] = {"counts": dict(tally.counts), "first": tally.first}
    if tally.counts:
        print("\nGateway log, warnings and errors: " + "; ".join(
            f"{k} x{v} (first: {tally.first[k]!r})" for k, v in tally.counts.items()))
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(f"\nTotal {report['seconds']}s")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=("test", "dev"), default="test",
                        help="corpus split for part 1 (test: held out, the reported one)")
    parser.add_argument("--json", metavar="PATH", help="write every figure to this JSON file")
    parser.add_argument("--concurrency", type=int, default=8, help="requests (or conversations) in flight")
    args = parser.parse_args()
    result = asyncio.run(main(args))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
