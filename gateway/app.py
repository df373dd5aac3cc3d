"""The composition root: the only place where config, backends and handlers are wired.

    app = create_app(load_config("gateway.yaml"))
    web.run_app(app, handler_cancellation=True)   # see gateway.cli.serve

Test seams are arguments (``sessions``, ``clock``, ``wall_clock``, ``registry``,
``token_counter``), never ``if testing:`` branches.
"""

from __future__ import annotations

import random
import time
from typing import Any, AsyncIterator, Callable, Mapping

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from backends import BACKEND_KINDS, Backend, Clock, SystemClock, as_clock
from config import GatewayConfig
from gateway import handlers
from gateway.accounting import Accountant, Budget
from gateway.anthropic import handlers as anthropic
from gateway.errors import Handler, error_middleware
from gateway.health import HealthMonitor
from gateway.keys import (
    ACCOUNTANT,
    CLOCK,
    CONFIG,
    HEALTH,
    LIMITS,
    MODEL_IDS,
    NEW_ID,
    REGISTRY,
    REQUEST_ID,
    ROUTER,
    STARTED,
    STREAMS,
    WALL_CLOCK,
)
from gateway.ledger import Ledger
from gateway.limits import Limits
from gateway.logs import request_log_middleware
from gateway.metrics import Metrics
from gateway.security import auth_middleware
from gateway.sse import ActiveStreams
from routing import REASONS, Router, TokenCounter


def create_app(cfg: GatewayConfig, *, sessions: Mapping[str, aiohttp.ClientSession] | None = None,
               clock: Clock | Callable[[], float] | None = None, wall_clock: Callable[[], float] = time.time,
               token_counter: TokenCounter | None = None,
               registry: CollectorRegistry | None = None) -> web.Application:
    """Build the gateway app. ``sessions`` (backend name -> ClientSession) replaces the pooled sessions
    the app would create; the caller then owns and closes them. ``token_counter`` defaults to
    tiktoken's cl100k_base loaded offline, or the calibrated estimate. ``wall_clock`` dates
    ledger rows and budget periods (UTC); ``clock`` (:class:`backends.Clock`, the system's by
    default) times everything else: readings, the watchdog, the hedge and the retry waits."""
    app = web.Application(
        # The request log sits outside the error middleware: it sees every rendered error.
        middlewares=[request_id_middleware, request_log_middleware, error_middleware, auth_middleware],
        # aiohttp answers 413 itself past this size; the error middleware gives it our shape.
        client_max_size=cfg.server.max_body_bytes,
    )
    app[CONFIG] = cfg
    app[CLOCK] = as_clock(clock) if clock is not None else SystemClock()
    app[WALL_CLOCK] = wall_clock
    app[STARTED] = wall_clock()
    app[REGISTRY] = registry or CollectorRegistry(auto_describe=True)
    app[LIMITS] = Limits(cfg, app[CLOCK])
    app[STREAMS] = ActiveStreams(app[CLOCK])
    # Request ids: 128 random bits from a generator seeded by the OS once. An id names a request
    # in logs and headers and guards nothing; uuid4() asked the kernel for 16 bytes on every
    # request, a system call on the way to the first byte.
    app[NEW_ID] = random.Random().getrandbits
    enabled = cfg.enabled_backends()
    app[MODEL_IDS] = {model: pin for model, pin in cfg.model_ids().items()
                      if pin is None or (pin[1] in enabled if pin[0] == "backend" else bool(cfg.tier(pin[1])))}
    counter = token_counter or TokenCounter.default()
    app.cleanup_ctx.append(_backends_ctx(list(enabled), sessions, counter))

    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/chat/completions", handlers.chat_completions)
        app.router.add_get(f"{prefix}/models", handlers.list_models)
        app.router.add_get(f"{prefix}/models/{{model}}", handlers.get_model)
        # The Anthropic front (Claude Code adds ?beta=true; the query is not part of the route).
        app.router.add_post(f"{prefix}/messages", anthropic.messages)
        app.router.add_post(f"{prefix}/messages/count_tokens", anthropic.count_tokens)
    app.router.add_get("/health", handlers.health)
    app.router.add_get("/stats", handlers.get_stats)
    app.router.add_get("/metrics", make_aiohttp_handler(app[REGISTRY]))
    return app


def _backends_ctx(names: list[str], sessions: Mapping[str, aiohttp.ClientSession] | None,
                  counter: TokenCounter):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        cfg = app[CONFIG]
        owned: list[aiohttp.ClientSession] = []
        backends: dict[str, Backend] = {}
        for name in names:
            bcfg = cfg.backend(name)
            cls = BACKEND_KINDS[bcfg.kind]
            session = sessions.get(name) if sessions else None
            if session is None:
                # One pooled session per backend, so one upstream's pool limits and
                # keep-alive rules (llama.cpp's) never affect the other.
                session = cls.make_session()
                owned.append(session)
            backends[name] = cls(name, bcfg, session, clock=app[CLOCK])
        ledger = await Ledger.open(cfg.ledger.path)  # LedgerError: a clear start-up failure
        budget = Budget(cfg, app[WALL_CLOCK])
        app[ROUTER] = router = Router(backends, cfg.routing, counter, clock=app[CLOCK])
        # At a spend cap the cloud is unavailable to routing, like a backend that is down.
        router.states.budget = lambda name: budget.exceeded() if backends[name].tier == "cloud" else None
        app[HEALTH] = monitor = HealthMonitor(backends, router.states, clock=app[CLOCK])
        metrics = Metrics(app[REGISTRY], lambda: _gauges(app), REASONS, frozenset(cfg.routing.escalation.patterns),
                          {name: b.tier for name, b in cfg.enabled_backends().items()})
        app[ACCOUNTANT] = accountant = Accountant(cfg, ledger, metrics, budget)
        await accountant.load()
        await monitor.start()
        try:
            yield
        finally:
            await monitor.stop()
            await accountant.flush()
            await ledger.close()
            for session in owned:
                await session.close()

    return ctx


def _gauges(app: web.Application) -> dict[str, Any]:
    router, monitor = app[ROUTER], app[HEALTH]
    return {
        "up": {name: health.ok for name, health in monitor.snapshot().items()},
        "tiers": {name: b.tier for name, b in router.backends.items()},
        "ratelimits": {name: {w: rl.remaining for w, rl in limits.items()}
                       for name, limits in router.states.rate_limits.items()},
        "budget": {period: info["remaining_usd"] for period, info in app[ACCOUNTANT].budget.report().items()},
        "streams": app[LIMITS].total_streams,
        "speeds": {name: router.states.speeds[name].report(router.states.in_flight[name]) for name in router.backends},
    }


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get("x-request-id", "")
    # Echo a caller's id only if it is short and plain: it lands in logs and headers.
    rid = incoming if 0 < len(incoming) <= 64 and incoming.replace("-", "").isalnum() else \
        f"{request.app[NEW_ID](128):032x}"
    request[REQUEST_ID] = rid
    response = await handler(request)
    if not response.prepared:
        response.headers.setdefault("x-request-id", rid)
        response.headers.setdefault("request-id", rid)  # the name Anthropic's SDKs read
    return response
