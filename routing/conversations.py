"""What routing remembers per conversation: escalation, the runaway guard, cloud spend. Pure.

Time is passed in (``now``); nothing here does I/O. Keyed by the conversation key of
:func:`routing.features.conversation_key`, bounded in size and forgotten after ``ttl_s`` idle.

- **Escalation** is sticky: once a conversation's recent turns cross the threshold
  (:class:`routing.escalation.Detector`), it stays escalated.
- **The runaway guard** stops a conversation for ``pause_s`` when, after escalation, it keeps
  producing failure signals (``signals_after_escalation``); when the same turn (the same call
  and the same result) repeats ``repeats`` times in a row; or when its cloud spend reaches
  ``routing.max_conversation_usd``.

Each request is one new turn of its conversation (``depth`` = assistant turns so far); a request
whose depth was already seen (a client retry) counts nothing twice.

    conversations = Conversations(cfg.routing, ttl_s=3600)
    verdict = conversations.observe(key, depth, newest_signals, fingerprint, escalates, now)
    verdict.escalated, verdict.stopped        # stopped: a GuardStop to refuse the request with
"""

from __future__ import annotations

import collections

import attrs

from config.routing import RoutingConfig


@attrs.frozen
class GuardStop:
    """Why a conversation is refused, and until when."""

    reason: str  # failing_after_escalation | repeating | conversation_budget (a metric label)
    setting: str  # the config key that sets the limit
    message: str
    until: float


@attrs.frozen
class Verdict:
    escalated: bool
    escalated_now: bool  # this request is the turn at which the threshold was crossed
    signals: frozenset[str]  # the newest turn's signals
    stopped: GuardStop | None


@attrs.define
class _State:
    seen: float
    depth: int = -1
    escalated: bool = False
    signals_after: int = 0
    fingerprint: int | None = None
    repeats: int = 0
    cloud_usd: float = 0.0
    stopped: GuardStop | None = None


class Conversations:
    def __init__(self, cfg: RoutingConfig, ttl_s: float, max_size: int = 10_000) -> None:
        self.cfg = cfg
        self.ttl_s = ttl_s
        self.max_size = max_size
        self._map: collections.OrderedDict[str, _State] = collections.OrderedDict()

    def _get(self, key: str, now: float) -> _State:
        state = self._map.get(key)
        if state is None or now - state.seen > self.ttl_s:
            state = _State(now)
            self._map[key] = state
            while len(self._map) > self.max_size:
                self._map.popitem(last=False)
        self._map.move_to_end(key)
        state.seen = now
        return state

    def escalated(self, key: str, now: float) -> bool:
        state = self._map.get(key)
        return bool(state and state.escalated and now - state.seen <= self.ttl_s)

    def observe(self, key: str, depth: int, signals: frozenset[str], fingerprint: int | None,
                escalates: bool, now: float, *, may_escalate: bool = True) -> Verdict:
        """Record one request of conversation ``key`` and say what routing must do with it.

        ``signals`` are its newest turn's, ``escalates`` whether its recent turns cross the
        threshold, ``fingerprint`` identifies the newest turn (None: nothing to compare).
        """
        state = self._get(key, now)
        guard = self.cfg.guard
        if state.stopped is not None and now >= state.stopped.until:
            state.stopped, state.signals_after, state.repeats = None, 0, 0  # the pause is over
        new_turn = depth > state.depth
        escalated_now = False
        if new_turn:
            state.depth = depth
            if state.escalated and signals:
                state.signals_after += 1
            if may_escalate and self.cfg.escalation.enabled and not state.escalated and escalates:
                state.escalated = escalated_now = True
            if fingerprint is not None and fingerprint == state.fingerprint:
                state.repeats += 1
            else:
                state.repeats = 0
            state.fingerprint = fingerprint
        if state.stopped is None and guard.enabled:
            state.stopped = self._stop(state, now)
        return Verdict(state.escalated, escalated_now, signals, state.stopped)

    def spent(self, key: str, usd: float, now: float) -> None:
        """Cloud dollars one finished request of ``key`` cost (accounting reports them)."""
        if key and usd > 0:
            self._get(key, now).cloud_usd += usd

    def _stop(self, state: _State, now: float) -> GuardStop | None:
        guard, until = self.cfg.guard, now + self.cfg.guard.pause_s
        if state.escalated and state.signals_after >= guard.signals_after_escalation:
            return GuardStop("failing_after_escalation", "routing.guard.signals_after_escalation",
                             f"this conversation kept failing after it was moved to the cloud "
                             f"({state.signals_after} more failed turns)", until)
        if state.repeats + 1 >= guard.repeats:
            return GuardStop("repeating", "routing.guard.repeats",
                             f"the same turn repeated {state.repeats + 1} times without progress", until)
        cap = self.cfg.max_conversation_usd
        if cap and state.cloud_usd >= cap:
            return GuardStop("conversation_budget", "routing.max_conversation_usd",
                             f"this conversation spent ${state.cloud_usd:.2f} on the cloud (cap ${cap:.2f})", until)
        return None
