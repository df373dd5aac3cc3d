"""What to do when an attempt fails: the supervisor's pure state machine. No I/O, no clock.

:class:`Flow` holds one request's attempt state (what was tried, what was given up, the failure
a failover is recovering from) and answers each failure with one :class:`Step`: go to a backend
(the same one after a backoff, another one, or one that recovers soon) with a method, or give
up with the error the client should get. The supervisor (:mod:`routing.supervisor`) does the
waiting and the I/O; tests drive this with plain values.

Before anything reached the client (within ``max_attempts`` and ``max_total_s``): refused,
reset, timeout, 5xx, 429, a silent or malformed start switch at once to the next candidate that
has not been tried and can serve (the rest of the tier first: the decision's order); otherwise
the same one is retried after a backoff with full jitter, never sooner than its
``Retry-After``. A context overflow or a slow prefill gives that backend up (it would overflow,
or be as slow, again). Any other rejection (a 4xx about the request itself) goes to the client.

After something reached the client: one failover, to another tier first (the failing tier's
other members likely run the same model on the same kind of box, and would re-prefill the
whole prompt cold). It restarts the answer, or continues it (``prefill`` on a backend that
declares it, else ``instruction``); a backend that refuses the prefill is asked in words. If the
failover fails too, the client gets the original failure.

    flow = Flow(decision, cfg, tiers={"local": "local", "cloud": "cloud"}, prefill={...}, started=now)
    step = flow.first()
    step = flow.failed(error, phase, has_content=False, now=t, usable=lambda n: True)
"""

from __future__ import annotations

from typing import Callable, Mapping

import attrs

from backends import BackendError, BackendRejected, BackendUnavailable, ContextOverflow
from config.schema import RoutingConfig
from routing.events import BEFORE_FIRST_TOKEN
from routing.policy import RouteDecision


@attrs.frozen
class Step:
    """Send the request to ``target`` by ``method`` (first, retry, restart, prefill,
    instruction) after ``delay_s``; ``recheck``: only if it is usable by then. ``error`` set:
    give up, and the client gets it. ``blame``: count the failure against the failed backend
    (its breaker, its 429 cooldown)."""

    target: str | None = None
    method: str | None = None
    reason: str | None = None  # the route reason from here on, if it changes
    delay_s: float = 0.0
    recheck: bool = False
    error: BackendError | None = None
    blame: bool = False
    rejected: bool = False  # given up because the request itself is wrong: not a switch at all

    @property
    def gives_up(self) -> bool:
        return self.error is not None


class Flow:
    def __init__(self, decision: RouteDecision, cfg: RoutingConfig, *, tiers: Mapping[str, str],
                 prefill: Mapping[str, bool], started: float, rand: Callable[[], float] = lambda: 1.0) -> None:
        self.cfg = cfg
        self.tiers = tiers
        self.prefill = prefill
        self.started = started
        self.rand = rand
        # Where a fallback may go: the candidates, then those out only for a while now.
        self.spare = [*decision.candidates, *decision.reserve]
        self.current = decision.primary
        self.method = "first"
        self.attempt = 0
        self.tried: set[str] = set()
        self.given_up: set[str] = set()  # overflowed, too slow, or failed after the client got bytes
        self.original: BackendError | None = None  # the failure a failover is recovering from

    def first(self) -> Step:
        return Step(self.current, "first")

    def sent(self, name: str) -> None:
        """An attempt went to ``name`` (a hedge may have been won by another than planned)."""
        self.attempt += 1
        self.current = name
        self.tried.add(name)

    def won(self, name: str) -> None:
        self.current = name

    def failed(self, error: BackendError, phase: str, *, has_content: bool, now: float,
               usable: Callable[[str], bool],
               recovers_at: Callable[[str], float | None] = lambda name: None) -> Step:
        name = self.current
        rejected = isinstance(error, BackendRejected)
        # A slow prefill is a long prompt, not a failing server; a rejection is the request's fault.
        blame = not rejected and error.failure != "slow_prefill"
        if rejected and not isinstance(error, ContextOverflow):
            if self.method == "prefill":
                # The fallback refused to continue a trailing assistant message: ask it in words.
                return self._go(name, "instruction")
            if self.original is None:
                return Step(error=error, rejected=True)  # the request itself is wrong
        if self.original is not None or phase != BEFORE_FIRST_TOKEN:
            return self._failover(error, name, has_content, now, usable, recovers_at, blame)
        if isinstance(error, ContextOverflow) or error.failure == "slow_prefill":
            self.given_up.add(name)
        if self.attempt >= self.cfg.max_attempts:
            return Step(error=error, blame=blame)
        fresh = [n for n in self.spare if n not in self.tried and n not in self.given_up and usable(n)]
        if fresh:
            reason = "slow_local" if error.failure == "slow_prefill" else "fallback"
            return self._go(fresh[0], "restart", reason=reason, blame=blame)
        if name in self.given_up:
            return Step(error=error, blame=blame)  # nowhere bigger (or faster) to go
        delay = min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * 2 ** (self.attempt - 1)) * self.rand()
        if error.retry_after is not None:
            delay = max(delay, error.retry_after)
        if now - self.started + delay > self.cfg.max_total_s:
            return Step(error=error, blame=blame)  # waiting would break the time budget: the client decides
        return self._go(name, "retry", delay_s=delay, blame=blame)

    def _failover(self, error: BackendError, name: str, has_content: bool, now: float,
                  usable: Callable[[str], bool], recovers_at: Callable[[str], float | None], blame: bool) -> Step:
        if self.original is not None:
            first = self.original
            return Step(error=BackendUnavailable(first.backend, f"{first.message}; continuing on {name} failed: "
                                                 f"{error.message}", status=first.status, failure=first.failure),
                        blame=blame)
        self.original = error
        self.given_up.add(name)
        tier = self.tiers[name]
        left = sorted((n for n in self.spare if n not in self.given_up), key=lambda n: self.tiers[n] == tier)
        target = next((n for n in left if usable(n)), None)
        delay = 0.0
        if target is None:
            # Out only for a while (a cooldown after a 429, an open circuit) that ends within the
            # time budget: a client mid-answer is better served by a pause than by an error event.
            waits = sorted((at, n) for n in left if (at := recovers_at(n)) is not None
                           and at - now <= self.cfg.max_total_s)
            if not waits:
                return Step(error=error, blame=blame)
            at, target = waits[0]
            delay = max(0.0, at - now) + 0.01  # just past the end of the cooldown
        method = ("prefill" if self.prefill[target] else "instruction") if has_content else "restart"
        return self._go(target, method, delay_s=delay, recheck=delay > 0, blame=blame)

    def _go(self, target: str, method: str, **kw: object) -> Step:
        self.method = method
        return Step(target, method, **kw)  # type: ignore[arg-type]
