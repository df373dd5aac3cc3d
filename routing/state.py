"""Backend state: circuit breakers, 429 cooldowns, rate-limit headroom, health, sticky turns.

Small state machines fed by events (a request's outcome, a health probe, rate-limit headers).
Time is always passed in (``now``), so tests drive them with a fake clock and no sleeps.
:meth:`BackendStates.views` freezes everything routing needs into :class:`BackendView` values
for the pure :func:`routing.policy.decide`.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Iterable, Mapping

import attrs

from backends import BackendError, RateLimit
from config.schema import BackendConfig, RoutingConfig
from routing.speed import Speed

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
# Never wait longer than this for a half-open trial: a recovered backend is used again within it.
MAX_OPEN_S = 30.0


class CircuitBreaker:
    """Opens when, among the last ``WINDOW`` outcomes, at least ``failures`` failed and they are
    at least half; after ``open_s`` one trial request may go (half-open); success closes it,
    failure re-opens it for twice as long (at most 30 s).

    A failure *rate*, not a run of consecutive failures: under concurrency a healthy backend
    with a few percent of errors strings three failures together every few seconds, and a
    consecutive-count breaker would keep taking it out of service (the soak showed it).

    >>> b = CircuitBreaker(failures=3, open_s=10)
    >>> for t in (0, 1, 2): b.record_failure(t)
    >>> b.state(5), b.allows(5), b.state(12), b.allows(12)
    ('open', False, 'half_open', True)
    """

    WINDOW = 20

    def __init__(self, failures: int, open_s: float) -> None:
        self.threshold = failures
        self.base_open_s = min(open_s, MAX_OPEN_S)
        self.open_s = self.base_open_s
        self.outcomes: collections.deque[bool] = collections.deque(maxlen=self.WINDOW)  # True = failed
        self.opened_at: float | None = None
        self.trial_at: float | None = None

    @property
    def failures(self) -> int:
        """Failures among the recent outcomes."""
        return sum(self.outcomes)

    def state(self, now: float) -> str:
        if self.opened_at is None:
            return CLOSED
        return HALF_OPEN if now >= self.opened_at + self.open_s else OPEN

    def allows(self, now: float) -> bool:
        state = self.state(now)
        if state == CLOSED:
            return True
        if state == OPEN:
            return False
        # Half-open: one trial at a time; a trial that never reported back expires.
        return self.trial_at is None or now >= self.trial_at + self.base_open_s

    def at(self, now: float) -> tuple[str, float | None]:
        """(the state routing sees, when an open circuit ends), in one step: every request asks
        this of every backend, and nearly always the circuit is closed."""
        if self.opened_at is None:
            return CLOSED, None
        return (OPEN if not self.allows(now) else self.state(now)), self.reopens_at(now)

    def reopens_at(self, now: float) -> float | None:
        return self.opened_at + self.open_s if self.state(now) == OPEN and self.opened_at is not None else None

    def started(self, now: float) -> None:
        if self.state(now) == HALF_OPEN:
            self.trial_at = now

    def record_success(self, now: float) -> None:
        if self.opened_at is not None:  # the trial (or a straggler) worked: start afresh
            self.outcomes.clear()
            self.opened_at, self.trial_at, self.open_s = None, None, self.base_open_s
        self.outcomes.append(False)

    def record_failure(self, now: float) -> None:
        state = self.state(now)
        if state == HALF_OPEN:
            self.open_s = min(self.open_s * 2, MAX_OPEN_S)
            self.opened_at, self.trial_at = now, None
            return
        if state == OPEN:
            return  # a request that started before the circuit opened
        self.outcomes.append(True)
        failed = self.failures
        if failed >= self.threshold and 2 * failed >= len(self.outcomes):
            self.opened_at, self.trial_at = now, None

    def probe_ok(self, now: float) -> None:
        """The active health probe saw the backend answer: let a trial through now."""
        if self.state(now) == OPEN:
            self.opened_at = now - self.open_s


def ratelimited_until(limits: Mapping[str, RateLimit], needed_tokens: int, reserve: float,
                      now: float) -> float | None:
    """When a request of ``needed_tokens`` may go, if a rate-limit window is too spent now.

    Remaining headroom is compared, as a count, with the request's need plus ``reserve`` (a
    fraction of the window's limit), so the cloud is left before it starts answering 429.
    """
    blocked: float | None = None
    for window, rl in limits.items():
        if rl.remaining is None or rl.reset_s is None:
            continue
        resets_at = rl.seen_at + rl.reset_s
        if now >= resets_at:
            continue  # the window has refilled since we saw it
        need = needed_tokens if window.startswith("tokens") else 1
        keep = (rl.limit or 0) * reserve
        if rl.remaining - need < keep:
            blocked = resets_at if blocked is None else max(blocked, resets_at)
    return blocked


@attrs.frozen
class BackendView:
    """One backend as routing sees it at one instant."""

    name: str
    context_window: int
    supports_images: bool
    health: str = "unknown"
    tier: str = attrs.field(kw_only=True)  # local | cloud
    rank: int = 0  # place in its tier's configured order
    breaker: str = CLOSED
    blocked_until: float | None = None  # cooldown or rate limit
    blocked_why: str | None = None
    over_budget: str | None = None  # why, e.g. "daily cloud budget of $5.00 spent"
    retry_at: float | None = None  # when a temporary block (cooldown, limit, open circuit) ends
    predicted_ttft_s: float | None = None  # for this request, from measured speeds; None: nothing measured
    in_flight: int = 0

    @property
    def recovers_at(self) -> float | None:
        """When this backend is usable again by itself, if it is out only for a while (not down,
        loading or over budget): the end of its cooldown, rate-limit wait or open circuit."""
        return self.retry_at if self.over_budget is None and self.health not in ("down", "loading") else None

    def unavailable(self) -> str | None:
        if self.over_budget:
            return f"over budget ({self.over_budget})"
        if self.health in ("down", "loading"):
            return self.health
        if self.breaker == OPEN:
            return "circuit open"
        if self.blocked_until is not None:
            return self.blocked_why
        return None


class StickyMap:
    """Conversation key -> backend that served its last turn, with a TTL and a size bound."""

    def __init__(self, ttl_s: float, max_size: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_size = max_size
        self._map: collections.OrderedDict[str, tuple[str, float, int]] = collections.OrderedDict()

    def get(self, key: str, now: float) -> str | None:
        entry = self._map.get(key)
        if entry is None or now - entry[1] > self.ttl_s:
            return None
        return entry[0]

    def cached(self, key: str, backend: str, now: float) -> int:
        """Prompt tokens of the conversation's last turn if ``backend`` served it: what its prompt
        cache likely still holds (llama.cpp's slot or host cache), so a turn there re-prefills little."""
        entry = self._map.get(key)
        return entry[2] if entry is not None and entry[0] == backend and now - entry[1] <= self.ttl_s else 0

    def set(self, key: str, backend: str, now: float, prompt_tokens: int = 0) -> None:
        if not key:
            return
        self._map[key] = (backend, now, prompt_tokens)
        self._map.move_to_end(key)
        while len(self._map) > self.max_size:
            self._map.popitem(last=False)


class BackendStates:
    """Everything the router remembers about each backend between requests."""

    def __init__(self, backends: Mapping[str, BackendConfig], cfg: RoutingConfig) -> None:
        self.cfg = cfg
        self.configs = dict(backends)
        self.breakers = {n: CircuitBreaker(cfg.breaker_failures, cfg.breaker_open_s) for n in backends}
        self.cooling_until: dict[str, float] = {}
        self.health: dict[str, str] = {n: "unknown" for n in backends}
        self.context: dict[str, int] = {}  # learned from the server (llama.cpp /props)
        # Why a backend is over its spend cap, or None; accounting installs the real check.
        self.budget: Callable[[str], str | None] = lambda name: None
        self.sticky = StickyMap(cfg.sticky_ttl_s)
        self.speeds = {n: Speed() for n in backends}
        self.in_flight = {n: 0 for n in backends}
        self.slots: dict[str, tuple[int, int, float]] = {}  # name -> (busy, total, read at)
        # The latest rate-limit reading per window, from response headers (Chunk.limits, or a
        # failed response's BackendError.limits).
        self.rate_limits: dict[str, dict[str, RateLimit]] = {n: {} for n in backends}
        # Each backend's place in its tier (config order breaks ties of `order`).
        self.ranks = {n: rank for rank, (_, _, n) in enumerate(sorted(
            (c.order, i, n) for i, (n, c) in enumerate(self.configs.items())))}

    def context_window(self, name: str) -> int:
        configured = self.configs[name].context_window
        learned = self.context.get(name)
        return min(configured, learned) if learned else configured

    def views(self, needed_tokens: int, now: float, prompt_tokens: int = 0,
              conversation: str = "", names: Iterable[str] | None = None) -> dict[str, BackendView]:
        """Views of ``names`` (default: every backend)."""
        return {name: self.view(name, needed_tokens, now, prompt_tokens, conversation)
                for name in (self.configs if names is None else names)}

    def resized(self, views: Mapping[str, BackendView], needed_tokens: int, now: float, prompt_tokens: int,
                conversation: str = "") -> dict[str, BackendView]:
        """``views`` for another prompt size: built again only where something reads the size (a
        rate-limit reading, a measured prefill speed); the rest are the same views."""
        return {name: self.view(name, needed_tokens, now, prompt_tokens, conversation)
                if self.rate_limits[name] or self.speeds[name].prefill_tps else view for name, view in views.items()}

    def view(self, name: str, needed_tokens: int, now: float, prompt_tokens: int = 0,
             conversation: str = "") -> BackendView:
        # Written for the common case (no cooldown, no rate-limit reading, a closed circuit):
        # every request builds a view of every backend.
        until = self.cooling_until.get(name)
        why = None
        if until is not None:
            if now >= until:
                until = None
            else:
                why = "cooling down after 429"
        limits = self.rate_limits[name]
        if limits:
            limited = ratelimited_until(limits, needed_tokens, self.cfg.ratelimit_reserve, now)
            if limited is not None and (until is None or limited > until):
                until, why = limited, "rate limit nearly spent"
        breaker, reopens = self.breakers[name].at(now)
        retry_at = reopens if until is None else until if reopens is None else max(until, reopens)
        config, in_flight = self.configs[name], self.in_flight[name]
        cached = self.sticky.cached(conversation, name, now) if conversation else 0
        return BackendView(
            name, self.context_window(name), config.supports_images, self.health[name], tier=config.tier,
            rank=self.ranks[name], in_flight=in_flight, breaker=breaker, blocked_until=until, blocked_why=why,
            over_budget=self.budget(name), retry_at=retry_at,
            predicted_ttft_s=self.speeds[name].predict_ttft(max(0, prompt_tokens - cached), in_flight),
        )

    # --- events --------------------------------------------------------------------------------
    def started(self, name: str, now: float) -> None:
        self.breakers[name].started(now)

    def succeeded(self, name: str, now: float) -> None:
        self.breakers[name].record_success(now)

    def observe_limits(self, name: str, limits: Mapping[str, RateLimit]) -> None:
        self.rate_limits[name].update(limits)

    def failed(self, name: str, error: BackendError, now: float) -> None:
        self.observe_limits(name, error.limits)
        self.breakers[name].record_failure(now)
        if error.status == 429:
            # Fixed end time: traffic during the cooldown never extends it (the original tool's
            # cooldown restarted on every request and never ended under steady traffic).
            wait = error.retry_after if error.retry_after is not None else self.cfg.cooldown_s
            self.cooling_until[name] = max(self.cooling_until.get(name, 0.0), now + wait)

    def observe_slots(self, name: str, busy: int, total: int, now: float) -> None:
        """The server's own count of busy slots (llama.cpp's /slots), read by the health probe.
        Shown, not routed on: it is seconds old, where requests in flight are exact."""
        self.slots[name] = (busy, total, now)

    def observe_health(self, name: str, state: str, now: float) -> None:
        self.health[name] = state
        if state == "ok":
            self.breakers[name].probe_ok(now)

    def report(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, breaker in self.breakers.items():
            cooling = self.cooling_until.get(name)
            out[name] = {
                "breaker": breaker.state(now),
                "recent_failures": breaker.failures,
                "cooldown_s": round(cooling - now, 1) if cooling and cooling > now else 0,
                "context_window": self.context_window(name),
                **self.speeds[name].report(self.in_flight[name]),
                "slots_busy": self.slots[name][0] if name in self.slots else None,
                "slots_total": self.slots[name][1] if name in self.slots else None,
            }
        return out
