"""Prometheus metrics, bound to an injected ``CollectorRegistry`` (no global registry).

Every label value comes from a bounded set: backend names (from config only) and the pairs a
failover makes, tiers, route reasons, statuses, failover reasons and phases, token kinds,
rate-limit windows. Nothing a client sends becomes a label.

    metrics = Metrics(registry, gauges=lambda: {...})     # gauges are read at scrape time
    metrics.observe(row)                                  # one finished request (a ledger row)
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

PREFIX = "glm_gateway"
STATUSES = frozenset({"ok", "error", "cancelled"})
APIS = frozenset({"openai", "anthropic"})  # the fronts: which API a request came in on
TOKEN_KINDS = ("prompt", "completion", "cached", "reasoning")
WINDOW = re.compile(r"(requests|tokens)-(minute|hour|day)")
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60)
JUDGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 5)
GUARDS = frozenset({"failing_after_escalation", "repeating", "conversation_budget"})
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)


def bounded(value: Any, allowed: frozenset[str], other: str = "other") -> str:
    return value if value in allowed else other


class Metrics:
    def __init__(self, registry: CollectorRegistry, gauges: Callable[[], Mapping[str, Any]],
                 route_reasons: frozenset[str], signals: frozenset[str] = frozenset(),
                 tiers: Mapping[str, str] | None = None) -> None:
        self.reasons = route_reasons
        self.signals = signals  # escalation signal names: from config, so bounded
        self.tiers = dict(tiers or {"local": "local", "cloud": "cloud"})  # backend name -> tier
        names = set(self.tiers)
        # What served a request: one backend, or two joined by a failover (names from config only).
        self.served = frozenset({*names, *(f"{a}+{b}" for a in names for b in names if a != b), "none"})
        self.requests = Counter(f"{PREFIX}_requests", "Finished requests, by what served them and the API they "
                                "came in on.", ["backend", "route_reason", "status", "api"], registry=registry)
        self.tokens = Counter(f"{PREFIX}_tokens", "Tokens consumed, by backend and kind.", ["backend", "tier", "kind"],
                              registry=registry)
        self.cost = Counter(f"{PREFIX}_cost_usd", "Spend in US dollars, by backend.", ["backend", "tier"],
                            registry=registry)
        self.savings = Counter(f"{PREFIX}_savings_usd", "Cloud cost avoided by serving locally, net of local cost.",
                               registry=registry)
        self.failovers = Counter(f"{PREFIX}_failovers", "Mid-stream switches to the other backend.",
                                 ["reason", "phase"], registry=registry)
        self.hedges = Counter(f"{PREFIX}_hedges", "Hedged requests, by which backend won.", ["outcome"],
                              registry=registry)
        self.ttft = Histogram(f"{PREFIX}_time_to_first_token_seconds", "Time to the first relayed delta.",
                              ["backend"], buckets=TTFT_BUCKETS, registry=registry)
        self.duration = Histogram(f"{PREFIX}_request_duration_seconds", "Request duration.", ["backend"],
                                  buckets=DURATION_BUCKETS, registry=registry)
        self.escalations = Counter(f"{PREFIX}_escalations", "Conversations moved to the cloud on evidence of local "
                                   "failing, by the signal at the turn that crossed the threshold.", ["signal"],
                                   registry=registry)
        self.guard_stops = Counter(f"{PREFIX}_guard_stops", "Requests refused by the runaway guard.", ["reason"],
                                   registry=registry)
        self.judge_calls = Counter(f"{PREFIX}_judge_calls", "Model-judge calls, by whether the judge agreed with "
                                   "the scorer (failed: no usable answer in time).", ["outcome"], registry=registry)
        self.judge_seconds = Histogram(f"{PREFIX}_judge_seconds", "Time the model judge took.",
                                       buckets=JUDGE_BUCKETS, registry=registry)
        registry.register(_Gauges(gauges))
        # prometheus-client's labels() validates and locks on every call; the label sets are
        # bounded, so each child is looked up once and kept (observe runs once per request).
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe(self, row: Mapping[str, Any]) -> None:
        served = bounded(row["served_by"] or "none", self.served)
        self._child(self.requests, served, bounded(row["route_reason"], self.reasons),
                    bounded(row["status"], STATUSES), bounded(row.get("api") or "openai", APIS)).inc()
        for name, used in row["by_backend"].items():
            if name not in self.tiers:
                continue  # not a configured backend: never a label
            tier = self.tiers[name]
            for kind in TOKEN_KINDS:
                if used[kind]:
                    self._child(self.tokens, name, tier, kind).inc(used[kind])
            if used["cost"]:
                self._child(self.cost, name, tier).inc(used["cost"])
        if row["savings"] > 0:
            self.savings.inc(row["savings"])
        if row["failover_reason"]:
            self._child(self.failovers, row["failover_reason"], row["failover_phase"]).inc()
        if row["hedge"]:
            self._child(self.hedges, row["hedge"]).inc()
        first = bounded(row["first_backend"] or "none", self.served)
        if row["ttft_s"] is not None:
            self._child(self.ttft, first).observe(row["ttft_s"])
        self._child(self.duration, first).observe(row["duration_s"])
        if row.get("escalated_by"):
            self._child(self.escalations, bounded(row["escalated_by"], self.signals)).inc()
        if row.get("guard"):
            self._child(self.guard_stops, bounded(row["guard"], GUARDS)).inc()
        if row.get("judge_backend") and row.get("judge_s") is not None:
            outcome = "failed" if not row["judge_label"] else "disagree" if row["class_source"] == "judge" else "agree"
            self._child(self.judge_calls, outcome).inc()
            self.judge_seconds.observe(row["judge_s"])


class _Gauges(Collector):
    """Values that are read, not counted: taken from the live gateway at scrape time."""

    def __init__(self, read: Callable[[], Mapping[str, Any]]) -> None:
        self.read = read

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # the registry must not read live values before the app is wired

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self.read()
        tiers = now.get("tiers", {})
        up = GaugeMetricFamily(f"{PREFIX}_backend_up", "1 if the backend's health probe passes.",
                               labels=["backend", "tier"])
        for name, ok in now["up"].items():
            up.add_metric([name, tiers.get(name, "")], 1.0 if ok else 0.0)
        yield up
        remaining = GaugeMetricFamily(f"{PREFIX}_ratelimit_remaining", "Cloud rate-limit headroom last reported.",
                                      labels=["backend", "window"])
        for name, windows in now["ratelimits"].items():
            for window, value in windows.items():
                if WINDOW.fullmatch(window) and value is not None:
                    remaining.add_metric([name, window], value)
        yield remaining
        budget = GaugeMetricFamily(f"{PREFIX}_budget_remaining_usd", "Cloud budget left in the period.",
                                   labels=["period"])
        for period, value in now["budget"].items():
            if value is not None:
                budget.add_metric([period], value)
        yield budget
        yield GaugeMetricFamily(f"{PREFIX}_streams_in_flight", "Streaming requests being relayed now.",
                                value=now["streams"])
        # What each backend's own timings say (llama.cpp), as moving averages; absent until measured.
        for key, name, doc in (("prefill_tps", "prefill_tokens_per_second", "Measured prompt-processing speed."),
                               ("decode_tps", "decode_tokens_per_second", "Measured generation speed."),
                               ("cache_hit_ratio", "prompt_cache_hit_ratio", "Share of prompt tokens the server "
                                "found in its cache."),
                               ("ttft_s", "measured_ttft_seconds", "Moving average of the time to first token."),
                               ("in_flight", "requests_in_flight", "Requests this backend is serving now.")):
            family = GaugeMetricFamily(f"{PREFIX}_backend_{name}", doc, labels=["backend", "tier"])
            for backend, speed in now.get("speeds", {}).items():
                if speed.get(key) is not None:
                    family.add_metric([backend, tiers.get(backend, "")], float(speed[key]))
            yield family
