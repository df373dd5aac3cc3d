"""Part 1 of the routing-quality bench (:mod:`tests.bench.routing_quality`), new tasks: every
task of a corpus split sent as the first request of a new task in each shape (classic Cline, the
Cline CLI, Claude Code), each classifier config on a fresh gateway; the routes summarised
against the labels (agreement, confusion, errors by tag, route reasons) with the savings from the
gateway's ``/stats``; and Claude Code's background requests on the small model. The tables are
printed by :mod:`tests.bench.routing_quality_report`.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

from backends.sim import CerebrasSim, LlamaCppSim
from routing import TokenCounter
from tests.bench import claude_shapes as claude
from tests.bench import cline_shapes as shapes
from tests.bench.routing_quality_harness import (
    MAX_TOKENS,
    MODEL,
    Answer,
    bounded,
    make_config,
    running_gateway,
    send_messages,
    sender,
    share,
)

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
