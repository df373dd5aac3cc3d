"""The router: the one async piece of routing. It decides, then runs the request under a
watchdog, falls back or fails over when a backend fails, and feeds what happened back into the
backend states.

    router = Router(backends, cfg.routing, counter)
    route = router.route(body, strategy="complexity")      # pure decision, or NoBackendAvailable
    async for chunk in router.stream(route, body): ...     # one coherent stream, whatever fails

Before anything reached the client (within ``max_attempts`` and ``max_total_s``): refused,
reset, timeout, 5xx, 429, a silent or malformed start switch to the other backend at once if it
has not been tried and can serve; otherwise the same one is retried after a backoff with full
jitter, never sooner than its ``Retry-After`` / rate-limit reset. A context overflow moves to
the other backend and is never retried on the same one. Any other rejection (a 4xx about the
request itself) goes straight to the client.

After something reached the client: a stall, cut, malformed event or in-stream error fails
over to the other backend once, which restarts or continues the answer (:mod:`routing.splice`).
If that fails too, the client gets an error event naming the original failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping

import attrs

from backends import Backend, BackendError, BackendRejected, BackendUnavailable, Chunk, ContextOverflow
from config.schema import RoutingConfig
from routing.assemble import assemble
from routing.classifier import Classification, Classifier
from routing.conversations import Conversations
from routing.errors import ConversationStopped, NoBackendAvailable
from routing.escalation import Detector, turn_fingerprint
from routing.features import Features, KnownTasks, extract_features
from routing.judge import Judge, JudgeVerdict
from routing.policy import ONLY, NoRoute, RouteDecision, decide
from routing.scorer import Scorer
from routing.splice import BEFORE_FIRST_TOKEN, Splice
from routing.state import BackendStates
from routing.tokens import TokenCounter
from routing.watch import Hedge, race, watched

log = logging.getLogger("routing")


@attrs.define
class Failover:
    reason: str  # ttft | stall | cut | malformed | error_event
    phase: str  # before_first_token | mid_reasoning | mid_content | mid_tool_call
    source: str
    target: str | None
    method: str | None = None  # restart | prefill | instruction


@attrs.define
class Route:
    """One request's route: the decision, and what happened while following it."""

    features: Features
    classification: Classification
    decision: RouteDecision
    strategy: str
    backend: str  # the backend being tried, then the one that finished the answer
    reason: str
    failures: list[tuple[str, str]] = attrs.Factory(list)  # (backend, error) before any byte
    failovers: list[Failover] = attrs.Factory(list)  # switches after bytes reached the client
    served_by: list[str] = attrs.Factory(list)  # backends whose tokens the client received
    hedge: Hedge = attrs.Factory(Hedge)
    usage: dict[str, dict[str, Any]] = attrs.Factory(dict)  # per backend, as reported or estimated
    ttft_s: float | None = None  # until the first content/reasoning/tool-call delta was relayed
    escalated_by: str | None = None  # the signal at the turn that escalated the conversation
    judge: JudgeVerdict | None = None  # the model judge's answer, when the scorer was unsure

    @property
    def model_used(self) -> str:
        return "+".join(self.served_by) if self.served_by else self.backend


class Router:
    def __init__(self, backends: Mapping[str, Backend], cfg: RoutingConfig, counter: TokenCounter, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 rand: Callable[[], float] = random.random, scorer: Scorer | None = None) -> None:
        self.backends = backends
        self.cfg = cfg
        self.counter = counter
        self.clock, self.sleep, self.rand = clock, sleep, rand
        self.classifier = Classifier(cfg.classifier, scorer)  # scorer: a loaded model to share (benchmarks)
        self.states = BackendStates({name: b.cfg for name, b in backends.items()}, cfg)
        self.detector = Detector(cfg.escalation)
        self.known_tasks = KnownTasks()
        self.conversations = Conversations(cfg, ttl_s=cfg.sticky_ttl_s)
        judge_backend = self._judge_backend(cfg.judge.backend) if cfg.judge.enabled else None
        self.judge = Judge(judge_backend, cfg.judge, clock) if judge_backend is not None else None

    def _judge_backend(self, name: str) -> Backend | None:
        """A backend by name, or a tier's first (by order): ``judge.backend: local`` means the
        local tier, whatever its servers are called."""
        if name in self.backends:
            return self.backends[name]
        tier = sorted((self.states.ranks[n], n) for n, b in self.backends.items() if b.cfg.tier == name)
        return self.backends[tier[0][1]] if tier else None

    # --- deciding ------------------------------------------------------------------------------
    def route(self, body: Mapping[str, Any], strategy: str, classification: Classification | None = None,
              pin: str | None = None) -> Route:
        now = self.clock()
        features = extract_features(body, self.counter, self.known_tasks)
        escalated, escalated_by = self._observe(body, features, "pinned" if pin else strategy, now)
        classification = classification or self.classifier.classify(features)
        needed = features.needed_tokens(self.cfg.output_reserve_tokens)
        views = self.states.views({n: b.rate_limits for n, b in self.backends.items()}, needed, now,
                                  features.prompt_tokens, features.conversation_key)
        sticky = self.states.sticky.get(features.conversation_key, now) if self.cfg.sticky else None
        decision = decide(features, classification, views, self.cfg, strategy=strategy, sticky=sticky, now=now,
                          escalated=escalated, pin=pin)
        log.debug("route %s strategy=%s class=%s score=%.3f reasons=%s tokens=%d key=%s escalated=%s -> %s",
                  "none" if isinstance(decision, NoRoute) else decision.primary, strategy,
                  classification.label, classification.score, list(classification.reasons),
                  features.prompt_tokens, features.conversation_key[:8], escalated, decision)
        if isinstance(decision, NoRoute):
            retry_after = None if decision.retry_at is None else max(0.0, decision.retry_at - now)
            raise NoBackendAvailable(decision.explain(), retry_after=retry_after)
        route = Route(features, classification, decision, strategy, decision.primary, decision.reason)
        route.escalated_by = escalated_by
        return route

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

    async def admit(self, body: Mapping[str, Any], strategy: str, pin: str | None = None) -> Route:
        """:meth:`route`, but when nothing can serve only for a while (a cooldown after a 429, an
        open circuit) and that while fits the time budget, wait it out and decide again: the
        same rule the attempts follow for ``Retry-After``. A 429 bounced to the client would
        come back later anyway, after Cline's own, longer backoff."""
        started = self.clock()
        for _ in range(self.cfg.max_attempts):
            try:
                return await self._judged(body, strategy, self.route(body, strategy, pin=pin))
            except NoBackendAvailable as exc:
                wait = exc.retry_after
                if wait is None or self.clock() - started + wait > self.cfg.max_total_s:
                    raise
                log.info("no backend available for %.2fs (%s); waiting", wait, exc)
                await self.sleep(wait + 0.01)  # just past the end of the cooldown
        return self.route(body, strategy, pin=pin)

    async def _judged(self, body: Mapping[str, Any], strategy: str, route: Route) -> Route:
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
            route = self.route(body, strategy, judged)
        route.judge = verdict
        return route

    # --- running -------------------------------------------------------------------------------
    async def stream(self, route: Route, body: Mapping[str, Any]) -> AsyncIterator[Chunk]:
        splice = Splice()
        started = self.clock()
        order = list(route.decision.candidates)
        spare = [*order, *route.decision.reserve]  # where a fallback may go if it has recovered by then
        tried: set[str] = set()
        given_up: set[str] = set()  # overflowed, or failed after the client got bytes
        name, request, method = order[0], body, None
        original: BackendError | None = None  # the failure a failover is recovering from
        for attempt in itertools.count(1):  # bounded: max_attempts before any byte, one failover after
            route.backend = name
            tried.add(name)
            attempt_started = self.clock()
            self.states.started(name, attempt_started)
            busy = name
            self.states.in_flight[busy] += 1
            try:
                chunks = await self._open(route, name, request, first=attempt == 1)
                name = route.backend  # a hedge may have been won by the other backend
                async with contextlib.aclosing(chunks):
                    async for chunk in chunks:
                        for out in splice.accept(chunk):
                            yield out
                        if name not in route.served_by and splice.phase != BEFORE_FIRST_TOKEN:
                            route.served_by.append(name)
                            now = self.clock()
                            self.states.speeds[name].observe_ttft(now - attempt_started)
                            if route.ttft_s is None:
                                route.ttft_s = now - started
                        timings = chunk.data.get("timings")
                        if timings:  # llama.cpp's own measurement, on its last chunk
                            self.states.speeds[name].observe_timings(timings)
            except (GeneratorExit, asyncio.CancelledError):
                # The client left: still account for what this backend consumed so far.
                route.usage.setdefault(route.backend, self._usage(route, splice, splice.usage, partial=True))
                raise
            except BackendError as exc:
                error: BackendError = exc
                name = route.backend
            else:
                route.usage[name] = self._usage(route, splice, splice.usage)
                self._served(route, name)
                return
            finally:
                self.states.in_flight[busy] -= 1
            if isinstance(error, BackendRejected) and not isinstance(error, ContextOverflow):
                if method == "prefill":
                    # The fallback refused to continue a trailing assistant message: ask it in words.
                    request, method = self._continuation(splice, body, name, prefill=False), "instruction"
                    route.failovers[-1].method = method
                    continue
                if original is None:
                    raise error  # the request itself is wrong
            elif not isinstance(error, ContextOverflow) and error.failure != "slow_prefill":
                # (A slow prefill is a long prompt, not a failing server: no breaker, no cooldown.)
                self.states.failed(name, error, self.clock())
            route.failures.append((name, error.message))
            log.info("attempt %d on %s failed (%s): %s", attempt, name, splice.phase, error)
            if original is not None or splice.phase != BEFORE_FIRST_TOKEN:
                # Bytes reached the client: fail over once, continuing or restarting the answer.
                route.usage[name] = self._usage(route, splice, splice.usage, partial=True)
                if original is not None:
                    raise BackendUnavailable(original.backend, f"{original.message}; continuing on {name} "
                                             f"failed: {error.message}", status=original.status,
                                             failure=original.failure) from None
                original = error
                given_up.add(name)
                # Another tier first: the failing one's other members likely run the same model
                # on the same kind of box, and would re-prefill the whole prompt cold.
                spare.sort(key=lambda n: self.backends[n].cfg.tier == self.backends[name].cfg.tier)
                target = next((n for n in spare if n not in given_up and self._usable(n)), None)
                if target is None:
                    target = await self._soon_usable([n for n in spare if n not in given_up])
                failover = Failover(error.failure or "cut", splice.phase, name, target)
                route.failovers.append(failover)
                if target is None:
                    raise error
                splice.switch(route.usage[name])
                if splice.content:
                    method = "prefill" if self.backends[target].supports_prefill else "instruction"
                    request = self._continuation(splice, body, target, prefill=method == "prefill")
                else:
                    method, request = "restart", body
                failover.method = method
                name = target
                continue
            # Nothing reached the client yet (a role chunk at most): fall back, or retry after a
            # backoff; the next stream still carries the first one's id.
            splice.switch(None)
            if isinstance(error, ContextOverflow) or error.failure == "slow_prefill":
                given_up.add(name)  # it would overflow, or be as slow, again
            if attempt >= self.cfg.max_attempts:
                raise error
            fresh = [n for n in spare if n not in tried and n not in given_up and self._usable(n)]
            if fresh:
                name, route.reason = fresh[0], "slow_local" if error.failure == "slow_prefill" else "fallback"
                continue
            if name in given_up:
                raise error  # nowhere bigger to go
            delay = min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * 2 ** (attempt - 1)) * self.rand()
            if error.retry_after is not None:
                delay = max(delay, error.retry_after)
            if self.clock() - started + delay > self.cfg.max_total_s:
                raise error  # waiting would break the time budget: let the client decide
            await self.sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")

    async def complete(self, route: Route, body: Mapping[str, Any]) -> dict[str, Any]:
        """Non-streaming requests stream upstream too, so they get the same protection."""
        return assemble([chunk.data async for chunk in self.stream(route, body)])

    async def _open(self, route: Route, name: str, request: Mapping[str, Any], first: bool) -> AsyncIterator[Chunk]:
        def abandon(eta_s: float) -> str | None:
            """Give up a prefill whose ETA is far past what another candidate takes."""
            margin = self.cfg.prefill_margin_s
            others = [self.states.speeds[n].ttft_s for n in route.decision.candidates if n != name]
            best = min((t for t in others if t is not None), default=None)
            if margin and best is not None and eta_s > best + margin:
                return f"its prefill needs {eta_s:.0f}s more, the other backend answers in {best:.1f}s"
            return None

        def switchable() -> bool:
            spare = (*route.decision.candidates, *route.decision.reserve)
            return any(n != name and self._usable(n) for n in spare)

        def open_stream(backend: Backend) -> AsyncIterator[Chunk]:
            return watched(backend, backend.stream(request), abandon, switchable)

        # A hedge races the first choice of the local tier with the first of the cloud's.
        tier = self.backends[name].cfg.tier
        other = next((n for n in route.decision.candidates if self.backends[n].cfg.tier != tier), None)
        if (first and self.cfg.hedge_after_s > 0 and other is not None and tier == "local"
                and self._usable(other)):
            winner, chunks = await race(self.backends[name], self.backends[other], open_stream,
                                        self.cfg.hedge_after_s, route.hedge,
                                        lambda n, exc: self.states.failed(n, exc, self.clock()))
            # Record what the losing side consumed (its prompt, estimated): free when local lost,
            # a cost when the cloud did, never a saving.
            if route.hedge.started and winner != name:
                route.usage[name] = self._usage(route, Splice(), None, partial=True)
            elif route.hedge.started:
                route.usage[other] = self._usage(route, Splice(), None, partial=True)
            route.backend = winner
            return chunks
        return open_stream(self.backends[name])

    def _continuation(self, splice: Splice, body: Mapping[str, Any], name: str, prefill: bool) -> dict[str, Any]:
        return self.backends[name].continuation_request(body, splice.text, prefill, self.cfg.continue_prompt)

    def _usage(self, route: Route, splice: Splice, reported: Mapping[str, Any] | None,
               partial: bool = False) -> dict[str, Any]:
        """What one backend consumed: its own usage if it said, else an estimate (marked)."""
        if reported:
            return dict(reported)
        prompt = route.features.prompt_tokens
        completion = 0
        if partial:
            completion = self.counter.count(splice.text) + self.counter.count("".join(splice.reasoning))
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion, "estimated": True}

    def _served(self, route: Route, name: str) -> None:
        now = self.clock()
        self.states.succeeded(name, now)
        if name not in route.served_by:
            route.served_by.append(name)
        if self.cfg.sticky:
            self.states.sticky.set(route.features.conversation_key, name, now, route.features.prompt_tokens)

    def spent(self, route: Route, cloud_usd: float) -> None:
        """What a finished request cost on the cloud, for its conversation's cap (the guard)."""
        self.conversations.spent(route.features.conversation_key, cloud_usd, self.clock())

    async def _soon_usable(self, names: list[str]) -> str | None:
        """The first of ``names`` that is out only for a while (a cooldown after a 429, an open
        circuit) that ends within the time budget, once that while is over; else None. A
        client mid-answer is better served by a pause than by an error event."""
        now = self.clock()
        waits = []
        for name in names:
            at = self.states.view(name, self.backends[name].rate_limits, 0, now).recovers_at
            if at is not None and at - now <= self.cfg.max_total_s:
                waits.append((at, name))
        if not waits:
            return None
        at, name = min(waits)
        log.info("failover waits %.2fs for %s", at - now, name)
        await self.sleep(at - now + 0.01)
        return name if self._usable(name) else None

    def _usable(self, name: str) -> bool:
        return self.states.view(name, self.backends[name].rate_limits, 0, self.clock()).unavailable() is None
