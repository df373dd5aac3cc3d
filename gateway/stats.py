"""``GET /stats``: the ledger, summed over four windows (since start, today, this month, all time).

Everything is computed from the ledger rows, so the figures survive restarts and always match a
recount of the ledger. Days and months are UTC.
"""

from __future__ import annotations

import collections
import datetime
from typing import Any

from gateway.ledger import Ledger

SUMS = ", ".join(f"coalesce(sum({c}), 0)" for c in (
    "local_prompt", "local_completion", "local_cached", "local_reasoning", "local_cost",
    "cloud_prompt", "cloud_completion", "cloud_cached", "cloud_reasoning", "cloud_cost",
    "savings", "local_at_cloud_price"))


def window_starts(now: float, started: float) -> dict[str, float]:
    d = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    day = d.replace(hour=0, minute=0, second=0, microsecond=0)
    return {"since_start": started, "today": day.timestamp(), "this_month": day.replace(day=1).timestamp(),
            "all_time": 0.0}


async def window(ledger: Ledger, since: float) -> dict[str, Any]:
    (row,) = await ledger.query(f"SELECT count(*), {SUMS} FROM requests WHERE ts >= ?", (since,))
    n, lp, lc, lca, lr, lcost, cp, cc, cca, cr, ccost, savings, local_at_cloud = row
    all_cloud = ccost + local_at_cloud  # what the same traffic would have cost on the cloud alone
    out: dict[str, Any] = {
        "requests": n,
        # By tier (the names of the two fixed backends before pools); by_backend has each one.
        "backends": {
            "local": {"tokens": {"prompt": lp, "completion": lc, "cached": lca, "reasoning": lr},
                      "cost_usd": round(lcost, 6)},
            "cloud": {"tokens": {"prompt": cp, "completion": cc, "cached": cca, "reasoning": cr},
                      "cost_usd": round(ccost, 6)},
        },
        "savings_usd": round(savings, 6),
        "savings_pct": round(100 * savings / all_cloud, 2) if all_cloud else 0.0,
        "all_cloud_cost_usd": round(all_cloud, 6),
        "by_backend": {
            name: {"tier": tier, "tokens": {"prompt": p, "completion": c, "cached": ca, "reasoning": r},
                   "cost_usd": round(usd, 6), "requests": k}
            for name, tier, p, c, ca, r, usd, k in await ledger.query(
                "SELECT j.key, json_extract(j.value, '$.tier'), " + ", ".join(
                    f"coalesce(sum(json_extract(j.value, '$.{f}')), 0)"
                    for f in ("prompt", "completion", "cached", "reasoning", "cost")) +
                ", count(*) FROM requests, json_each(requests.usage_by_backend) AS j "
                "WHERE ts >= ? AND usage_by_backend IS NOT NULL GROUP BY j.key", (since,))},
    }
    for name, column in (("requests_by_backend", "served_by"), ("route_reasons", "route_reason"),
                         ("statuses", "status"), ("hedges", "hedge"), ("errors", "error"),
                         ("classified_by", "class_source"), ("escalations", "escalated_by"),
                         ("guard_stops", "guard")):
        rows = await ledger.query(f"SELECT {column}, count(*) FROM requests WHERE ts >= ? AND {column} IS NOT NULL "
                                  f"GROUP BY {column}", (since,))
        out[name] = dict(rows)
    # By front (issue #15); rows from before the Anthropic front have no api and came in on OpenAI's.
    out["by_api"] = {api: {"requests": k, "cost_usd": round(usd, 6), "savings_usd": round(saved, 6)}
                     for api, k, usd, saved in await ledger.query(
                         "SELECT coalesce(api, 'openai'), count(*), coalesce(sum(cloud_cost + local_cost), 0), "
                         "coalesce(sum(savings), 0) FROM requests WHERE ts >= ? GROUP BY 1", (since,))}
    rows = await ledger.query("SELECT failover_reason, failover_phase, count(*) FROM requests WHERE ts >= ? "
                              "AND failover_reason IS NOT NULL GROUP BY 1, 2", (since,))
    out["failovers"] = [{"reason": r, "phase": p, "count": c} for r, p, c in rows]
    (calls, failed, overruled, judge_s, judge_p, judge_c, judge_cost), = await ledger.query(
        "SELECT count(*), coalesce(sum(judge_label IS NULL), 0), coalesce(sum(class_source = 'judge'), 0),"
        " coalesce(sum(judge_s), 0), coalesce(sum(judge_prompt), 0), coalesce(sum(judge_completion), 0),"
        " coalesce(sum(judge_cost), 0) FROM requests WHERE ts >= ? AND judge_backend IS NOT NULL", (since,))
    answered = calls - failed
    out["judge"] = {"calls": calls, "failed": failed, "overruled_scorer": overruled,
                    "agreement_with_scorer": round((answered - overruled) / answered, 4) if answered else None,
                    "mean_s": round(judge_s / calls, 4) if calls else None,
                    "tokens": {"prompt": judge_p, "completion": judge_c}, "cost_usd": round(judge_cost, 6)}
    # What the scorer weighed most, per verdict: the reasons of its decisions, most frequent first.
    reasons: dict[str, collections.Counter[str]] = {"simple": collections.Counter(), "complex": collections.Counter()}
    for label, joined in await ledger.query(
            "SELECT classification, class_reasons FROM requests WHERE ts >= ? AND class_source IN ('model', 'judge')"
            " AND class_reasons IS NOT NULL", (since,)):
        reasons.get(label, collections.Counter()).update(joined.split("; "))
    out["scorer_reasons"] = {label: dict(c.most_common(5)) for label, c in reasons.items()}
    out["ttft_s"] = {}
    for (backend,) in await ledger.query("SELECT DISTINCT first_backend FROM requests WHERE ts >= ? AND "
                                         "first_backend IS NOT NULL ORDER BY 1", (since,)):
        values = [v for (v,) in await ledger.query(
            "SELECT ttft_s FROM requests WHERE ts >= ? AND first_backend = ? AND ttft_s IS NOT NULL "
            "ORDER BY ttft_s", (since, backend))]
        out["ttft_s"][backend] = {f"p{q}": round(values[min(len(values) - 1, int(q / 100 * len(values)))], 4)
                                  for q in (50, 90, 99)} if values else None
    return out


async def stats(ledger: Ledger, now: float, started: float) -> dict[str, Any]:
    return {name: await window(ledger, since) for name, since in window_starts(now, started).items()}
