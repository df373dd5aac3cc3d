"""The report of the routing-quality bench (:mod:`tests.bench.routing_quality`): the Markdown
tables and lines it prints for part 1 (routes per classifier and shape, shape agreement,
confusion matrices, errors by tag, Claude Code's background requests) and part 2 (escalation
per shape, mismatches, the runaway loop). The figures come from
:mod:`tests.bench.routing_quality_tasks` and :mod:`tests.bench.routing_quality_replay`.
"""

from __future__ import annotations

import collections
from typing import Any

from config.routing import EscalationConfig
from tests.bench import claude_shapes as claude
from tests.bench.routing_quality_harness import SHAPE_NAMES, SHAPES, pct, share


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
