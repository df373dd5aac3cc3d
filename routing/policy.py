"""The routing policy: ``decide()`` turns plain values into a frozen decision. No I/O, no clock.

Order of rules:

1. The strategy proposes an order of tiers (``complexity`` asks the classifier; the pinned
   model ids and ``x-glm-route: local|cloud`` mean ``local_only`` / ``cloud_only``; a
   ``<routed>@<name>`` id pins one backend). Each tier lists its members best first
   (:func:`members`): local servers by predicted time to first token, the cloud chain in order.
2. Escalated: a conversation whose recent turns showed local failing goes to the cloud first
   (never a pinned one). Otherwise sticky: a conversation stays on the backend that served its
   last turn, unless a rule below moves it (llama.cpp keeps that conversation's KV cache warm).
3. Hard rules remove backends: a prompt that does not fit a backend's context window; images,
   when some candidate accepts them and this one does not; a predicted time to first token past
   ``max_local_ttft_s``, when another candidate is faster; a backend that is down, loading,
   open-circuit, cooling down, near its rate limit or over budget.

    decision = decide(features, classification, views, cfg, strategy="complexity", sticky=None, now=t)
    decision.candidates, decision.primary, decision.reason
"""

from __future__ import annotations

import itertools
from typing import Mapping

import attrs

from config.schema import RoutingConfig
from routing.classifier import COMPLEX, Classification
from routing.features import Features
from routing.state import BackendView

# Bounded set: these become metric labels and the x-glm-route-reason header.
REASONS = frozenset({
    "pinned",       # a pinned model id or x-glm-route header chose the backend
    "sticky",       # the conversation's previous turn was served here
    "simple",       # the classifier said simple (complexity strategy)
    "complex",      # the classifier said complex (complexity strategy)
    "local_first",  # the strategy's preferred backend
    "cloud_first",
    "context",      # the preferred backend's context window is too small
    "images",       # the preferred backend does not accept images
    "unavailable",  # the preferred backend is down, open-circuit, cooling or rate-limited
    "fallback",     # set at run time: the primary failed before the first byte
    "escalated",    # the conversation's recent turns showed the local model failing
    "guard",        # set when refused: the runaway guard stopped the conversation
    "slow_local",   # the preferred backend's predicted (or progressing) prefill is too slow
})
ONLY = {"local_only": "local", "cloud_only": "cloud"}


@attrs.frozen
class RouteDecision:
    """Who serves, in order: ``candidates[0]`` first, then each of the rest if the ones before
    fail before the first byte (the rest of its tier first, then the other tier)."""

    candidates: tuple[str, ...]
    reason: str
    skipped: tuple[tuple[str, str], ...] = ()  # (backend, why) for each backend ruled out
    # Ruled out only by their state now (down, cooling, open circuit, rate limit, budget), in
    # the strategy's order: a failover later in the request may still go there if they recover.
    reserve: tuple[str, ...] = ()

    def __attrs_post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown route reason {self.reason!r}")
        if not self.candidates:
            raise ValueError("a decision needs a candidate")

    @property
    def primary(self) -> str:
        return self.candidates[0]

    @property
    def fallback(self) -> str | None:
        return self.candidates[1] if len(self.candidates) > 1 else None


@attrs.frozen
class NoRoute:
    """Nothing can serve; ``retry_at`` is set when that is temporary (cooldowns, rate limits)."""

    skipped: tuple[tuple[str, str], ...]
    retry_at: float | None

    def explain(self) -> str:
        return "; ".join(f"{name}: {why}" for name, why in self.skipped) or "no backend is enabled"


def proposal(strategy: str, classification: Classification) -> list[tuple[str, str]]:
    """The strategy's order of (tier, reason) before any rule applies."""
    if strategy in ONLY:
        return [(ONLY[strategy], "pinned")]
    if strategy == "cloud_first":
        return [("cloud", "cloud_first"), ("local", "cloud_first")]
    if strategy == "local_first":
        return [("local", "local_first"), ("cloud", "local_first")]
    if classification.label == COMPLEX:
        return [("cloud", "complex"), ("local", "complex")]
    return [("local", "simple"), ("cloud", "simple")]


def members(tier: str, views: Mapping[str, BackendView]) -> list[str]:
    """A tier's backends, best first. The cloud tier is a chain: its configured order. Local
    servers go by predicted time to first token (queue wait + uncached prompt / prefill speed),
    then by requests in flight (what spreads load before any speed is measured), then by order.
    An idle server nothing was measured on yet counts as instant, so it gets measured; a busy one
    counts as slowest (it may be deep in a long prefill: measurements start afresh on restart)."""
    tier_views = [v for v in views.values() if v.tier == tier]
    if tier == "cloud":
        return [v.name for v in sorted(tier_views, key=lambda v: v.rank)]

    return [v.name for v in sorted(tier_views, key=lambda v: (_predicted(v), v.in_flight, v.rank))]


def _predicted(v: BackendView) -> float:
    if v.predicted_ttft_s is not None:
        return v.predicted_ttft_s
    return 0.0 if v.in_flight == 0 else float("inf")


def _slow(view: BackendView, cfg: RoutingConfig) -> bool:
    return bool(cfg.max_local_ttft_s) and (view.predicted_ttft_s or 0.0) > cfg.max_local_ttft_s


def settled(low: Mapping[str, BackendView], high: Mapping[str, BackendView], cfg: RoutingConfig,
            needed_low: int, needed_high: int) -> bool:
    """Whether :func:`decide` gives one decision for every prompt size between two, given the
    views at each end (``needed_*``: the context each end needs). Then a decision on a size's
    proven bounds is the decision on its exact count (:class:`routing.tokens.PromptCount`).

    Every rule that reads the size is monotone in it: fitting a context window, a rate-limit
    window's headroom, a predicted time to first token past ``max_local_ttft_s``. So one answer
    at both ends is the answer in between. The local tier's order by predicted time to first
    token is the order in between too if it is the same at both ends with no tie: each
    prediction is proportional to the uncached prompt (or a constant), and only the sticky
    server has a cached part, so any two predictions cross at most once as the prompt grows.
    """
    for name, lo in low.items():
        hi = high[name]
        if ((needed_low > lo.context_window) != (needed_high > hi.context_window)
                or lo.blocked_until != hi.blocked_until or lo.blocked_why != hi.blocked_why
                or _slow(lo, cfg) != _slow(hi, cfg)):
            return False
    order = members("local", low)
    if order != members("local", high):
        return False
    for a, b in itertools.pairwise(order):
        moves = any(low[n].predicted_ttft_s != high[n].predicted_ttft_s for n in (a, b))
        if moves and (_predicted(low[a]) == _predicted(low[b]) or _predicted(high[a]) == _predicted(high[b])):
            return False  # a tie at an end: the tie-break there may not hold in between
    return True


def decide(features: Features, classification: Classification, views: Mapping[str, BackendView],
           cfg: RoutingConfig, *, strategy: str, sticky: str | None, now: float,
           escalated: bool = False, pin: str | None = None, bound: bool = False) -> RouteDecision | NoRoute:
    """``pin``: one backend by name (its model id), whatever the strategy says. ``bound``: the
    prompt's size is a lower bound of its count (the router checked it :func:`settled`), which
    the reasons for skipping a backend then say."""
    if pin is not None:
        order = [(pin, "pinned")] if pin in views else []
    else:
        tiers = proposal(strategy, classification)
        if escalated and strategy not in ONLY:
            # Evidence beats the guess: the cloud first, whatever the classifier or stickiness said.
            tiers = [("cloud", "escalated"), ("local", "escalated")]
        order = [(name, reason) for tier, reason in tiers for name in members(tier, views)]
        if sticky and not escalated and strategy not in ONLY and any(name == sticky for name, _ in order):
            # The server that served the last turn first (it holds the prefix), then the rest
            # of its tier, then the other tier.
            tier = views[sticky].tier
            order.sort(key=lambda item: (views[item[0]].tier != tier, item[0] != sticky))
            order[0] = (sticky, "sticky")

    needed = features.needed_tokens(cfg.output_reserve_tokens)
    someone_takes_images = features.has_images and any(views[n].supports_images for n, _ in order)

    out = {name: views[name].unavailable() for name, _ in order}
    # Too slow only matters if something faster could serve: a slow answer beats none.
    someone_fast = any(not _slow(views[n], cfg) and not out[n] and needed <= views[n].context_window
                       for n, _ in order)
    at_least = "at least " if bound else ""
    skipped: list[tuple[str, str]] = []
    rule_of: dict[str, str] = {}
    for name, _ in order:
        view = views[name]
        if needed > view.context_window:
            why, rule = f"needs {at_least}{needed} tokens, context is {view.context_window}", "context"
        elif someone_takes_images and not view.supports_images:
            why, rule = "does not accept images", "images"
        elif someone_fast and _slow(view, cfg):
            why, rule = f"predicted time to first token {at_least}{view.predicted_ttft_s:.0f}s", "slow_local"
        else:
            why, rule = out[name] or "", "unavailable"
        if why:
            skipped.append((name, why))
            rule_of[name] = rule
    candidates = [(name, reason) for name, reason in order if name not in rule_of]

    if not candidates:
        too_small = [name for name, _ in order if rule_of[name] == "context"]
        if too_small and len(too_small) == len(order):
            # Fits nowhere: send it to the biggest window and let that upstream refuse it; its
            # context-length error is what makes Cline truncate the conversation.
            biggest = max(too_small, key=lambda n: views[n].context_window)
            return RouteDecision((biggest,), "context", tuple(skipped))
        # If any backend is only waiting (cooldown, rate limit, open circuit), say when: Cline
        # retries a 429 with retry-after by itself.
        waits = [w for w in (views[n].retry_at for n, _ in order) if w is not None]
        return NoRoute(tuple(skipped), min(waits) if waits else None)

    primary, reason = candidates[0]
    first_tier = views[order[0][0]].tier
    if views[primary].tier != first_tier:
        # The preferred tier was passed over: say why (by its first member's rule).
        reason = rule_of[order[0][0]]
    reserve = tuple(name for name, _ in order if rule_of.get(name) in ("unavailable", "slow_local"))
    return RouteDecision(tuple(name for name, _ in candidates), reason, tuple(skipped), reserve)
