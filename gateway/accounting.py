"""Accounting: what each request consumed, cost and saved, and the cloud budget.

Definitions (the numbers on /stats and /metrics follow them):

- **usage** per backend is what the upstream reported (prompt, completion, cached, reasoning
  tokens); only when it reported nothing (a stream cut short, a cancelled request, a lost hedge)
  is it estimated with the token counter, and the row says so.
- **cost** per backend = uncached prompt x input price + cached x cached price + completion x
  output price, with that backend's prices from config. A tier's columns in the ledger
  (``local_*``, ``cloud_*``) sum its backends; ``usage_by_backend`` keeps each one.
- **savings** of a request that the local tier served alone (finished, or cancelled by the
  client) = what its local tokens would have cost at the prices of the cloud chain's first
  backend (what would have served it), minus local's own cost. A request that touched the cloud
  (fallback, failover, a hedge either way) saves nothing: the cloud tokens it burned are cost.

    accountant = Accountant(cfg, ledger, metrics, clock=time.time)
    row = accountant.row(route, outcome, status="ok", ...)   # outcome: the request's events, folded
    accountant.record(row)                                  # budget, metrics at once; ledger off-loop
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Any, Callable, Mapping

import orjson

from config import TIERS, BackendConfig, GatewayConfig
from gateway.ledger import NAMES, Ledger
from routing import Outcome, Route
from routing.judge import JudgeVerdict

log = logging.getLogger("gateway.accounting")


def tokens(usage: Mapping[str, Any] | None) -> dict[str, int]:
    usage = usage or {}
    details = usage.get("prompt_tokens_details") or {}
    out_details = usage.get("completion_tokens_details") or {}
    return {
        "prompt": int(usage.get("prompt_tokens") or 0),
        "completion": int(usage.get("completion_tokens") or 0),
        "cached": int(details.get("cached_tokens") or 0),
        "reasoning": int(out_details.get("reasoning_tokens") or 0),
    }


def cost(t: Mapping[str, int], prices: BackendConfig) -> float:
    uncached = max(0, t["prompt"] - t["cached"])
    return (uncached * prices.price_input_per_mtok + t["cached"] * prices.price_cached_input_per_mtok
            + t["completion"] * prices.price_output_per_mtok) / 1_000_000


class Budget:
    """Cloud spend per UTC day and month, against the configured caps."""

    def __init__(self, cfg: GatewayConfig, clock: Callable[[], float]) -> None:
        self.cfg = cfg.budget
        self.clock = clock
        self.day_key, self.month_key = self._keys(clock())
        self._next_day = self._midnight_after(clock())
        self.day = self.month = 0.0
        self.alerted: set[str] = set()

    def periods(self) -> tuple[str, str]:
        """The current UTC day and month, as "YYYY-MM-DD" and "YYYY-MM"."""
        return self._keys(self.clock())

    @staticmethod
    def _keys(ts: float) -> tuple[str, str]:
        d = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
        return d.strftime("%Y-%m-%d"), d.strftime("%Y-%m")

    @staticmethod
    def _midnight_after(ts: float) -> float:
        return (ts // 86400 + 1) * 86400  # UTC days are 86400 s: no leap seconds in Unix time

    def _roll(self) -> None:
        # Called on every routing decision: date formatting only when a UTC day has passed.
        now = self.clock()
        if now < self._next_day:
            return
        self._next_day = self._midnight_after(now)
        day, month = self._keys(now)
        if day != self.day_key:
            self.day_key, self.day = day, 0.0
            self.alerted.discard("daily")
        if month != self.month_key:
            self.month_key, self.month = month, 0.0
            self.alerted.discard("monthly")

    def add(self, usd: float) -> None:
        self._roll()
        self.day += usd
        self.month += usd
        for period, spent, cap in self._periods():
            if cap and spent >= cap * self.cfg.alert_fraction and period not in self.alerted:
                self.alerted.add(period)
                log.warning("cloud spend %s: $%.4f of $%.2f (%.0f%%)", period, spent, cap, 100 * spent / cap)

    def _periods(self) -> list[tuple[str, float, float]]:
        return [("daily", self.day, self.cfg.daily_usd), ("monthly", self.month, self.cfg.monthly_usd)]

    def exceeded(self) -> str | None:
        """Why the cloud is over budget, or None."""
        self._roll()
        for period, spent, cap in self._periods():
            if cap and spent >= cap:
                return f"{period} cloud budget of ${cap:.2f} spent"
        return None

    def report(self) -> dict[str, Any]:
        self._roll()
        return {period: {"cap_usd": cap or None, "spent_usd": round(spent, 6),
                         "remaining_usd": round(max(0.0, cap - spent), 6) if cap else None,
                         "alert": bool(cap) and spent >= cap * self.cfg.alert_fraction,
                         "exceeded": bool(cap) and spent >= cap}
                for period, spent, cap in self._periods()}


class Accountant:
    """Turns a finished request into one ledger row, and keeps budget and metrics current."""

    def __init__(self, cfg: GatewayConfig, ledger: Ledger, metrics: Any, budget: Budget) -> None:
        self.cfg = cfg
        self.ledger = ledger
        self.metrics = metrics
        self.budget = budget
        self._writes: set[asyncio.Future[None]] = set()
        # Savings are priced at what would have served the request instead: the cloud chain's first.
        clouds = cfg.tier("cloud") or [n for n, b in cfg.backends.items() if b.tier == "cloud"]
        self.cloud_prices: BackendConfig | None = cfg.backend(clouds[0]) if clouds else None

    async def load(self) -> None:
        """Budgets survive restarts: this UTC day's and month's cloud spend from the ledger."""
        day, month = self.budget.periods()
        rows = await self.ledger.query(
            "SELECT coalesce(sum(CASE WHEN strftime('%Y-%m-%d', ts, 'unixepoch') = ? THEN cloud_cost END), 0),"
            " coalesce(sum(cloud_cost), 0) FROM requests WHERE strftime('%Y-%m', ts, 'unixepoch') = ?",
            (day, month))
        self.budget.day, self.budget.month = rows[0]

    def row(self, route: Route, outcome: Outcome, *, request_id: str, status: str, stream: bool, started: float,
            ended: float, duration_s: float, error: str | None, api: str = "openai") -> dict[str, Any]:
        """The ledger row. ``started``/``ended`` are wall-clock (UTC periods); the duration is
        measured on the monotonic clock, so a clock step cannot distort it."""
        row: dict[str, Any] = {
            "id": request_id, "ts": ended, "started": started, "status": status, "stream": int(stream), "api": api,
            "strategy": route.strategy, "route_reason": outcome.reason,
            "classification": route.classification.label,
            "served_by": outcome.model_used if outcome.served_by else None,
            "first_backend": outcome.served_by[0] if outcome.served_by else None,
            "ttft_s": outcome.ttft_s, "duration_s": duration_s, "error": error,
            "failover_reason": outcome.failovers[0].failure if outcome.failovers else None,
            "failover_phase": outcome.failovers[0].phase if outcome.failovers else None,
            # By tier (local_won, cloud_won): a hedge races the two tiers' first choices.
            "hedge": f"{self.cfg.backend(outcome.hedge.winner).tier}_won" if outcome.hedge else None,
        }
        totals = {tier: {"prompt": 0, "completion": 0, "cached": 0, "reasoning": 0} for tier in TIERS}
        spent = dict.fromkeys(TIERS, 0.0)
        estimated = dict.fromkeys(TIERS, 0)
        by_backend: dict[str, dict[str, Any]] = {}
        for name, usage in outcome.usage.items():
            bcfg = self.cfg.backend(name)
            t = tokens(usage)
            usd = cost(t, bcfg)
            for kind, n in t.items():
                totals[bcfg.tier][kind] += n
            spent[bcfg.tier] += usd
            guessed = int(bool(usage and usage.get("estimated")))
            estimated[bcfg.tier] |= guessed
            by_backend[name] = {"tier": bcfg.tier, **t, "cost": usd, "estimated": guessed}
        for tier in TIERS:
            for kind, n in totals[tier].items():
                row[f"{tier}_{kind}"] = n
            row[f"{tier}_estimated"] = estimated[tier]
            row[f"{tier}_cost"] = spent[tier]
        row["by_backend"] = by_backend  # for the metrics; the ledger keeps it as JSON
        row["usage_by_backend"] = orjson.dumps(by_backend).decode() if by_backend else None
        prices = self.cloud_prices
        row["local_at_cloud_price"] = cost(totals["local"], prices) if prices is not None else 0.0
        local_alone = bool(outcome.served_by) and all(b["tier"] == "local" for b in by_backend.values()) and all(
            self.cfg.backend(n).tier == "local" for n in outcome.served_by)
        row.update(self._judge(route.judge))
        # What the judge cost counts against what serving locally saved (nothing, for a local judge).
        saved = row["local_at_cloud_price"] - row["local_cost"] - row["judge_cost"]
        row["savings"] = saved if local_alone and status != "error" else 0.0
        c = route.classification
        row.update(complexity=c.score if c.source in ("model", "judge") else None, class_source=c.source or None,
                   class_reasons="; ".join(c.reasons[:3]) or None, escalated_by=route.escalated_by, guard=None)
        return row

    def _judge(self, verdict: JudgeVerdict | None) -> dict[str, Any]:
        if verdict is None:
            return {"judge_backend": None, "judge_label": None, "judge_s": None, "judge_prompt": 0,
                    "judge_completion": 0, "judge_cost": 0.0}
        t = tokens(verdict.usage)
        return {"judge_backend": verdict.backend, "judge_label": verdict.label, "judge_s": verdict.seconds,
                "judge_prompt": t["prompt"], "judge_completion": t["completion"],
                "judge_cost": cost(t, self.cfg.backend(verdict.backend))}

    def refused(self, *, request_id: str, strategy: str, stream: bool, at: float, error: str = "NoBackendAvailable",
                guard: str | None = None, api: str = "openai") -> dict[str, Any]:
        """The row of a request refused before any backend was tried: none could take it (all down,
        cooling, or over budget), or the runaway guard stopped its conversation (``guard``)."""
        row: dict[str, Any] = {name: 0 for name in NAMES if name.startswith(TIERS)}
        row.update(id=request_id, ts=at, started=at, status="error", stream=int(stream), api=api, strategy=strategy,
                   route_reason="guard" if guard else "unavailable", classification=None, served_by=None,
                   first_backend=None, ttft_s=None, duration_s=0.0, error=error, failover_reason=None,
                   failover_phase=None, hedge=None, local_at_cloud_price=0.0, savings=0.0, complexity=None,
                   class_source=None, class_reasons=None, escalated_by=None, guard=guard, by_backend={},
                   usage_by_backend=None, **self._judge(None))
        return row

    def record(self, row: dict[str, Any]) -> asyncio.Future[None]:
        """Account for one finished request: budget and metrics now, the ledger row off the event
        loop. The returned future is done when the row is committed."""
        written = self.ledger.add(row)  # first, so the commit runs while the rest is done here
        self._writes.add(written)
        written.add_done_callback(self._writes.discard)
        # A judge on the cloud spends cloud dollars like any request does.
        judge = row["judge_backend"]
        judge_on_cloud = judge is not None and self.cfg.backend(judge).tier == "cloud"
        self.budget.add(row["cloud_cost"] + (row["judge_cost"] if judge_on_cloud else 0.0))
        self.metrics.observe(row)
        return written

    async def flush(self) -> None:
        """Wait until every recorded row is in the ledger (graceful shutdown, tests)."""
        if self._writes:
            await asyncio.gather(*list(self._writes))
