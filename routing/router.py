"""The router: the one async piece of routing. It decides, then runs the request with fallback
before the first byte, and feeds what happened back into the backend states.

    router = Router(backends, cfg.routing, counter)
    route = router.route(body, strategy="complexity")      # pure decision, or NoBackendAvailable
    async for chunk in router.stream(route, body): ...     # falls back until a first chunk arrives

Failure handling before the first byte (within ``max_attempts`` and ``max_total_s``):

- refused, reset, timeout, 5xx, 429, malformed start: the other backend at once if it has not
  been tried and can serve; otherwise the same one again after a backoff with full jitter, never
  sooner than its ``Retry-After`` / rate-limit reset;
- a context overflow from one backend: the other backend, never the same one again;
- any other rejection (a 4xx about the request itself): straight to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, TypeVar

import attrs

from backends import Backend, BackendError, BackendRejected, Chunk, ContextOverflow
from config.schema import RoutingConfig
from routing.classifier import Classification, Classifier
from routing.errors import NoBackendAvailable
from routing.features import Features, extract_features
from routing.policy import NoRoute, RouteDecision, decide
from routing.state import BackendStates
from routing.tokens import TokenCounter

log = logging.getLogger("routing")
T = TypeVar("T")


@attrs.define
class Route:
    """One request's route: the decision, and what happened while following it."""

    features: Features
    classification: Classification
    decision: RouteDecision
    strategy: str
    backend: str  # the backend being tried, then the one that served
    reason: str
    failures: list[tuple[str, str]] = attrs.Factory(list)  # (backend, error) before the first byte


class Router:
    def __init__(self, backends: Mapping[str, Backend], cfg: RoutingConfig, counter: TokenCounter, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 rand: Callable[[], float] = random.random) -> None:
        self.backends = backends
        self.cfg = cfg
        self.counter = counter
        self.clock, self.sleep, self.rand = clock, sleep, rand
        self.classifier = Classifier(cfg.classifier)
        self.states = BackendStates({name: b.cfg for name, b in backends.items()}, cfg)

    # --- deciding ------------------------------------------------------------------------------
    def route(self, body: Mapping[str, Any], strategy: str) -> Route:
        now = self.clock()
        features = extract_features(body, self.counter)
        classification = self.classifier.classify(features)
        needed = features.needed_tokens(self.cfg.output_reserve_tokens)
        views = self.states.views({n: b.rate_limits for n, b in self.backends.items()}, needed, now)
        sticky = self.states.sticky.get(features.conversation_key, now) if self.cfg.sticky else None
        decision = decide(features, classification, views, self.cfg, strategy=strategy, sticky=sticky, now=now)
        log.debug("route %s strategy=%s class=%s score=%.1f reasons=%s tokens=%d key=%s -> %s",
                  "none" if isinstance(decision, NoRoute) else decision.primary, strategy,
                  classification.label, classification.score, list(classification.reasons),
                  features.prompt_tokens, features.conversation_key[:8], decision)
        if isinstance(decision, NoRoute):
            retry_after = None if decision.retry_at is None else max(0.0, decision.retry_at - now)
            raise NoBackendAvailable(decision.explain(), retry_after=retry_after)
        return Route(features, classification, decision, strategy, decision.primary, decision.reason)

    # --- running -------------------------------------------------------------------------------
    async def stream(self, route: Route, body: Mapping[str, Any]) -> AsyncIterator[Chunk]:
        """The served backend's chunks; backends are switched only before the first one."""

        async def first_chunk(backend: Backend) -> tuple[Chunk | None, AsyncIterator[Chunk]]:
            chunks = backend.stream(body)
            try:
                return await anext(chunks, None), chunks
            except BaseException:
                await chunks.aclose()
                raise

        first, chunks = await self._attempts(route, first_chunk)
        async with contextlib.aclosing(chunks):
            try:
                if first is not None:
                    yield first
                async for chunk in chunks:
                    yield chunk
            except BackendError as exc:
                self.states.failed(route.backend, exc, self.clock())
                raise
        self._served(route)

    async def complete(self, route: Route, body: Mapping[str, Any]) -> dict[str, Any]:
        async def call(backend: Backend) -> dict[str, Any]:
            return await backend.complete(body)

        result = await self._attempts(route, call)
        self._served(route)
        return result

    def _served(self, route: Route) -> None:
        now = self.clock()
        self.states.succeeded(route.backend, now)
        if self.cfg.sticky:
            self.states.sticky.set(route.features.conversation_key, route.backend, now)

    async def _attempts(self, route: Route, call: Callable[[Backend], Awaitable[T]]) -> T:
        started = self.clock()
        order = list(route.decision.candidates)
        tried: set[str] = set()
        overflowed: set[str] = set()
        name = order[0]
        for attempt in range(1, self.cfg.max_attempts + 1):
            route.backend = name
            tried.add(name)
            self.states.started(name, self.clock())
            try:
                return await call(self.backends[name])
            except ContextOverflow as exc:
                overflowed.add(name)
                error: BackendError = exc
            except BackendRejected:
                raise  # the request itself is wrong: no other backend will like it better
            except BackendError as exc:
                self.states.failed(name, exc, self.clock())
                error = exc
            route.failures.append((name, error.message))
            log.info("attempt %d on %s failed before the first byte: %s", attempt, name, error)
            if attempt == self.cfg.max_attempts:
                raise error
            others = [n for n in order if n != name and n not in overflowed]
            fresh = [n for n in others if n not in tried and self._usable(n)]
            if fresh:
                name, route.reason = fresh[0], "fallback"
                continue
            if name in overflowed:
                raise error  # nowhere bigger to go
            delay = min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * 2 ** (attempt - 1)) * self.rand()
            if error.retry_after is not None:
                delay = max(delay, error.retry_after)
            if self.clock() - started + delay > self.cfg.max_total_s:
                raise error  # waiting would break the time budget: let the client decide
            await self.sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")

    def _usable(self, name: str) -> bool:
        view = self.states.views({name: self.backends[name].rate_limits}, 0, self.clock())[name]
        return view.unavailable() is None
