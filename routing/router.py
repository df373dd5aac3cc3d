"""The router: decides where a request goes, and hands the run to its supervisor.

    router = Router(backends, cfg.routing, counter)
    route = await router.admit(body, strategy="complexity")   # the decision, or NoBackendAvailable
    supervision = router.stream(route, body)                  # routing.supervisor: typed events
    async for event in supervision.events(): ...              # routing.events: Chunk, Started, ...

Deciding is pure (features, classifier, policy) over the backend states this object keeps; what
happens when an attempt fails is the pure :class:`routing.flow.Flow`; the I/O loop around it is
:class:`routing.supervisor.Supervision`.
"""

from __future__ import annotations

import logging
import random
from typing import Any, Awaitable, Callable, Mapping

import attrs

from backends import Backend, Clock, SystemClock, as_clock
from config.schema import RoutingConfig
from routing.assemble import collect
from routing.classifier import Classification, Classifier
from routing.conversations import Conversations
from routing.errors import ConversationStopped, NoBackendAvailable
from routing.escalation import Detector, turn_fingerprint
from routing.events import Outcome
from routing.features import Features, LastTurns, extract_features
from routing.judge import Judge, JudgeVerdict
from routing.policy import ONLY, NoRoute, RouteDecision, decide, settled
from routing.scorer import Scorer
from routing.state import BackendStates, BackendView
from routing.supervisor import Supervision
from routing.tokens import TokenCounter

log = logging.getLogger("routing")


@attrs.frozen
class Route:
    """One request's route: what was decided, before anything ran. What then happened is in the
    request's events (:mod:`routing.events`)."""

    features: Features
    classification: Classification
    decision: RouteDecision
    strategy: str
    reason: str
    escalated_by: str | None = None  # the signal at the turn that escalated the conversation
    judge: JudgeVerdict | None = None  # the model judge's answer, when the scorer was unsure


class Router:
    def __init__(self, backends: Mapping[str, Backend], cfg: RoutingConfig, counter: TokenCounter, *,
                 clock: Clock | Callable[[], float] | None = None,
                 sleep: Callable[[float], Awaitable[Any]] | None = None,
                 rand: Callable[[], float] = random.random, scorer: Scorer | None = None) -> None:
        self.backends = backends
        self.cfg = cfg
        self.counter = counter
        # One clock for readings, the watchdog's and hedge's timers, and the retry waits.
        self.clock = as_clock(clock) if clock is not None else SystemClock()
        self.sleep = sleep or self.clock.sleep
        self.rand = rand
        self.classifier = Classifier(cfg.classifier, scorer)  # scorer: a loaded model to share (benchmarks)
        self.states = BackendStates({name: b.cfg for name, b in backends.items()}, cfg)
        # What the failure state machine needs of each backend; fixed for the router's life.
        self.tiers = {name: b.tier for name, b in backends.items()}
        self.prefill = {name: b.caps.prefill for name, b in backends.items()}
        # What each strategy can reach: a pinned tier's decision needs views of that tier only.
        self.reach = {strategy: tuple(n for n, t in self.tiers.items() if t == tier) for strategy, tier in ONLY.items()}
        self.detector = Detector(cfg.escalation)
        self.last_turns = LastTurns()
        self.conversations = Conversations(cfg, ttl_s=cfg.sticky_ttl_s)
        judge_backend = self._judge_backend(cfg.judge.backend) if cfg.judge.enabled else None
        self.judge = Judge(judge_backend, cfg.judge, self.clock) if judge_backend is not None else None

    def _judge_backend(self, name: str) -> Backend | None:
        """A backend by name, or a tier's first (by order): ``judge.backend: local`` means the
        local tier, whatever its servers are called."""
        if name in self.backends:
            return self.backends[name]
        tier = sorted((self.states.ranks[n], n) for n, b in self.backends.items() if b.tier == name)
        return self.backends[tier[0][1]] if tier else None

    # --- deciding ------------------------------------------------------------------------------
    def route(self, body: Mapping[str, Any], strategy: str, classification: Classification | None = None,
              pin: str | None = None, *, ceiling: bool = False) -> Route:
        """``ceiling``: the body's ``max_tokens`` is the model's output ceiling, not what the
        answer needs (Claude Code sends 32,000 or 64,000 on every turn), so the context check
        keeps at most ``output_reserve_tokens`` free (fewer if ``max_tokens`` is smaller). A
        local answer that would run past the context then stops with finish_reason ``length``,
        which the client sees."""
        now = self.clock()
        features = extract_features(body, self.counter, self.last_turns)
        if ceiling and features.max_tokens:
            features = attrs.evolve(features, max_tokens=min(features.max_tokens, self.cfg.output_reserve_tokens))
        escalated, escalated_by = self._observe(body, features, "pinned" if pin else strategy, now)
        reach = ((pin,) if pin in self.backends else ()) if pin is not None else self.reach.get(strategy)
        sticky = self.states.sticky.get(features.conversation_key, now) if self.cfg.sticky else None

        def decided(features: Features, classification: Classification, views: Mapping[str, BackendView],
                    bound: bool = False) -> RouteDecision | NoRoute:
            return decide(features, classification, views, self.cfg, strategy=strategy, sticky=sticky, now=now,
                          escalated=escalated, pin=pin, bound=bound)

        decision: RouteDecision | NoRoute | None = None
        if not features.prompt.settled:
            # A follow-up turn's new text is not counted yet: decide on its bounds if every rule
            # that reads the prompt's size agrees at both, which makes it the decision the exact
            # count would give (routing.policy.settled). Else, or if nothing can serve (the
            # refusal names exact sizes), count now and decide on the count.
            low, high = features.sized(features.prompt.low), features.sized(features.prompt.high)
            reserve = self.cfg.output_reserve_tokens
            low_class, low_views = self._facts(low, classification, reach, now)
            high_class = classification or self.classifier.classify(high)
            high_views = self.states.resized(low_views, high.needed_tokens(reserve), now, high.prompt_tokens,
                                             features.conversation_key)
            if low_class == high_class and settled(low_views, high_views, self.cfg, low.needed_tokens(reserve),
                                                   high.needed_tokens(reserve)):
                decision = decided(low, low_class, low_views, bound=True)
                classification = low_class
                if isinstance(decision, NoRoute):
                    decision = None
        if decision is None:
            classification, views = self._facts(features, classification, reach, now)
            decision = decided(features, classification, views)
        assert classification is not None
        log.debug("route %s strategy=%s class=%s score=%.3f reasons=%s tokens=%s key=%s escalated=%s -> %s",
                  "none" if isinstance(decision, NoRoute) else decision.primary, strategy,
                  classification.label, classification.score, classification.reasons,
                  features.prompt, features.conversation_key[:8], escalated, decision)
        if isinstance(decision, NoRoute):
            retry_after = None if decision.retry_at is None else max(0.0, decision.retry_at - now)
            raise NoBackendAvailable(decision.explain(), retry_after=retry_after)
        return Route(features, classification, decision, strategy, decision.reason, escalated_by)

    def _facts(self, features: Features, classification: Classification | None, reach: tuple[str, ...] | None,
               now: float) -> tuple[Classification, dict[str, BackendView]]:
        """What a decision reads for one prompt size: the classification and the backends' views."""
        views = self.states.views(features.needed_tokens(self.cfg.output_reserve_tokens), now,
                                  features.prompt_tokens, features.conversation_key, reach)
        return classification or self.classifier.classify(features), views

    def _observe(self, body: Mapping[str, Any], features: Features, strategy: str,
                 now: float) -> tuple[bool, str | None]:
        """Escalation and the runaway guard for this request's conversation: (escalated, the
        signal that escalated it at this very turn). A compaction request touches nothing."""
        if features.compaction or not features.conversation_key:
            return False, None
        messages = body.get("messages") or ()
        turns = self.detector.recent_turns(messages, self.cfg.escalation.window) if features.depth else []
        newest = turns[-1] if turns else frozenset()
        verdict = self.conversations.observe(
            features.conversation_key, features.depth, newest, turn_fingerprint(messages) if features.depth else None,
            bool(turns) and self.detector.escalates(turns), now, may_escalate=strategy not in ONLY)
        if verdict.stopped is not None:
            stop = verdict.stopped
            log.info("runaway guard: conversation %s stopped (%s)", features.conversation_key[:8], stop.reason)
            raise ConversationStopped(stop.reason, stop.setting, stop.message, retry_after=stop.until - now)
        by = None
        if verdict.escalated_now:
            by = min(newest or frozenset().union(*turns) or {"signals"})
            log.info("conversation %s escalated to the cloud (%s)", features.conversation_key[:8], by)
        return verdict.escalated and strategy not in ONLY, by

    async def admit(self, body: Mapping[str, Any], strategy: str, pin: str | None = None, *,
                    ceiling: bool = False) -> Route:
        """:meth:`route`, but when nothing can serve only for a while (a cooldown after a 429, an
        open circuit) and that while fits the time budget, wait it out and decide again: the
        same rule the attempts follow for ``Retry-After``. A 429 bounced to the client would
        come back later anyway, after Cline's own, longer backoff."""
        started = self.clock()
        for _ in range(self.cfg.max_attempts):
            try:
                return await self._judged(body, strategy, self.route(body, strategy, pin=pin, ceiling=ceiling),
                                          ceiling)
            except NoBackendAvailable as exc:
                wait = exc.retry_after
                if wait is None or self.clock() - started + wait > self.cfg.max_total_s:
                    raise
                log.info("no backend available for %.2fs (%s); waiting", wait, exc)
                await self.sleep(wait + 0.01)  # just past the end of the cooldown
        return self.route(body, strategy, pin=pin, ceiling=ceiling)

    async def _judged(self, body: Mapping[str, Any], strategy: str, route: Route, ceiling: bool = False) -> Route:
        """The route, decided again if the judge overrules a doubtful first-turn verdict."""
        c, features = route.classification, route.features
        if (self.judge is None or strategy != "complexity" or route.reason == "pinned" or c.source != "model"
                or features.depth
                or route.reason not in ("simple", "complex")
                or not self.judge.doubtful(c.score, self.classifier.threshold)):
            return route
        verdict = await self.judge.ask(features.conversation_key, features.task_text)
        log.debug("judge on %s: %s (scorer %s %.3f) in %.3fs%s", features.conversation_key[:8], verdict.label,
                  c.label, c.score, verdict.seconds, f" ({verdict.error})" if verdict.error else "")
        if verdict.label is not None and verdict.label != c.label:
            judged = Classification(verdict.label, c.score, (f"judge: {verdict.label}", *c.reasons), "judge")
            route = self.route(body, strategy, judged, ceiling=ceiling)
        return attrs.evolve(route, judge=verdict)

    # --- running -------------------------------------------------------------------------------
    def stream(self, route: Route, body: Mapping[str, Any]) -> Supervision:
        """Run the request: ``async for event in router.stream(route, body).events()``."""
        return Supervision(self, route, body)

    async def complete(self, route: Route, body: Mapping[str, Any]) -> tuple[dict[str, Any], Outcome]:
        """Non-streaming requests stream upstream too, so they get the same protection. Raises
        the request's error if it failed."""
        tally = Outcome.of(route)
        return await collect(self.stream(route, body).events(), tally), tally

    def usable(self, name: str) -> bool:
        return self.states.view(name, 0, self.clock()).unavailable() is None

    def recovers_at(self, name: str) -> float | None:
        return self.states.view(name, 0, self.clock()).recovers_at

    def spent(self, route: Route, cloud_usd: float) -> None:
        """What a finished request cost on the cloud, for its conversation's cap (the guard)."""
        self.conversations.spent(route.features.conversation_key, cloud_usd, self.clock())
