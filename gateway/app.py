"""The composition root: the only place where config, backends and handlers are wired.

    app = create_app(load_config("gateway.yaml"))
    web.run_app(app, handler_cancellation=True)   # see gateway.cli.serve

Test seams are arguments (``sessions``, ``clock``), never ``if testing:`` branches.
"""

from __future__ import annotations

import time
import uuid
from typing import AsyncIterator, Callable, Mapping

import aiohttp
from aiohttp import web

from backends import BACKEND_KINDS, Backend
from config import GatewayConfig
from gateway import handlers
from gateway.errors import error_middleware
from gateway.health import HealthMonitor
from gateway.keys import CLOCK, CONFIG, HEALTH, MODEL_IDS, REQUEST_ID, ROUTER, STARTED
from routing import Router, TokenCounter


def create_app(cfg: GatewayConfig, *, sessions: Mapping[str, aiohttp.ClientSession] | None = None,
               clock: Callable[[], float] = time.monotonic,
               token_counter: TokenCounter | None = None) -> web.Application:
    """Build the gateway app. ``sessions`` (role -> ClientSession) replaces the pooled sessions
    the app would create; the caller then owns and closes them. ``token_counter`` defaults to
    tiktoken's cl100k_base loaded offline, or the calibrated estimate."""
    app = web.Application(
        middlewares=[request_id_middleware, error_middleware],
        # aiohttp answers 413 itself past this size; the error middleware gives it our shape.
        client_max_size=cfg.server.max_body_bytes,
    )
    app[CONFIG] = cfg
    app[CLOCK] = clock
    app[STARTED] = int(time.time())
    roles = [r for r in ("local", "cloud") if cfg.backend(r).enabled]
    app[MODEL_IDS] = {model: role for model, role in cfg.model_ids().items() if role is None or role in roles}
    counter = token_counter or TokenCounter.default()
    app.cleanup_ctx.append(_backends_ctx(roles, sessions, counter))

    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/chat/completions", handlers.chat_completions)
        app.router.add_get(f"{prefix}/models", handlers.list_models)
    app.router.add_get("/health", handlers.health)
    return app


def _backends_ctx(roles: list[str], sessions: Mapping[str, aiohttp.ClientSession] | None,
                  counter: TokenCounter):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        cfg = app[CONFIG]
        owned: list[aiohttp.ClientSession] = []
        backends: dict[str, Backend] = {}
        for role in roles:
            bcfg = cfg.backend(role)
            cls = BACKEND_KINDS[bcfg.kind]
            session = sessions.get(role) if sessions else None
            if session is None:
                # One pooled session per backend, so one upstream's pool limits and
                # keep-alive rules (llama.cpp's) never affect the other.
                session = cls.make_session()
                owned.append(session)
            backends[role] = cls(role, bcfg, session)
        app[ROUTER] = router = Router(backends, cfg.routing, counter, clock=app[CLOCK])
        app[HEALTH] = monitor = HealthMonitor(backends, router.states, clock=app[CLOCK])
        await monitor.start()
        try:
            yield
        finally:
            await monitor.stop()
            for session in owned:
                await session.close()

    return ctx


@web.middleware
async def request_id_middleware(request: web.Request, handler: handlers.Handler) -> web.StreamResponse:
    incoming = request.headers.get("x-request-id", "")
    # Echo a caller's id only if it is short and plain: it lands in logs and headers.
    rid = incoming if 0 < len(incoming) <= 64 and incoming.replace("-", "").isalnum() else uuid.uuid4().hex
    request[REQUEST_ID] = rid
    response = await handler(request)
    if not response.prepared:
        response.headers.setdefault("x-request-id", rid)
    return response
