"""Part 2 of the routing-quality bench (:mod:`tests.bench.routing_quality`), escalation replay:
agent conversations built per shape (failing and healthy variants, on easy train-split tasks),
the request each should escalate at computed from how it was built, the replay turn by turn
through a gateway, and the summary of where it did escalate; then the Cline CLI runaway loop
(text-only answers and the ``[SYSTEM]`` reminder) against the runaway guard. The tables are
printed by :mod:`tests.bench.routing_quality_report`.
"""

from __future__ import annotations

import collections
import random
from pathlib import Path
from typing import Any

import attrs

from backends.sim import CerebrasSim, LlamaCppSim
from config.routing import EscalationConfig
from routing import TokenCounter, corpus
from routing.scorer import Scorer
from tests.bench import claude_shapes as claude
from tests.bench import cline_shapes as shapes
from tests.bench import cline_turns
from tests.bench.cline_texts import CLI_REMINDER
from tests.bench.routing_quality_harness import (
    MAX_TOKENS,
    MODEL,
    Answer,
    Gateway,
    bounded,
    make_config,
    running_gateway,
    send,
    sender,
    share,
)

FAILING_PER_SHAPE = 48
HEALTHY_PER_SHAPE = 48
RUNAWAY_REQUESTS = 30


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
    builder = {"classic": cline_turns.ClassicTurns, "cli": cline_turns.CliTurns, "claude": claude.ClaudeTurns}[shape]
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
                             {"role": "user", "content": CLI_REMINDER}]
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
