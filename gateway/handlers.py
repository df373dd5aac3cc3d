"""HTTP handlers. Thin: parse, ask routing, hand the stream to the relay, log one line.

Errors are raised, never caught here: :func:`gateway.errors.error_middleware` renders them.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

import attrs
import orjson
from aiohttp import web

from backends import BackendError
from gateway.errors import InvalidRequest, ModelNotFound, NoBackend, json_response
from gateway.keys import CLOCK, CONFIG, HEALTH, MODEL_IDS, REQUEST_ID, ROUTER, STARTED
from gateway.sse import StreamRelay
from gateway.validation import parse_chat_request

log = logging.getLogger("gateway.request")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def chat_completions(request: web.Request) -> web.StreamResponse:
    app = request.app
    cfg, clock = app[CONFIG], app[CLOCK]
    started = clock()
    rid = request[REQUEST_ID]
    chat = parse_chat_request(await request.read(), request.headers.get("Content-Type"))
    strategy = _strategy(request, chat.model or cfg.models.routed)
    router = app[ROUTER]
    route = router.route(chat.body, strategy)
    if cfg.logging.log_bodies:
        log.debug("request %s body %s", rid, orjson.dumps(chat.body).decode())

    entry: dict[str, Any] = {"id": rid, "model": chat.model, "strategy": strategy,
                             "class": route.classification.label, "stream": chat.stream}
    headers = {"x-request-id": rid}
    try:
        if chat.stream:
            relay = StreamRelay(request, served=route, headers=headers, keepalive_s=cfg.server.keepalive_s,
                                include_usage=chat.include_usage, clock=clock)
            try:
                await relay.run(router.stream(route, chat.body))
            finally:
                out = relay.outcome
                entry.update(status=out.status, ttft_s=out.ttft_s, chunks=out.chunks,
                             finish_reason=out.finish_reason, usage=out.usage,
                             error=str(out.error) if out.error else None)
            assert relay.response is not None
            return relay.response
        data = await router.complete(route, chat.body)
        data["model_used"] = route.model_used
        entry.update(status="ok", usage=data.get("usage"))
        headers.update({"x-glm-backend": route.backend, "x-glm-route-reason": route.reason})
        return json_response(data, headers=headers)
    except BackendError as exc:
        entry.update(status="error", error=str(exc))
        raise
    finally:
        entry.update(backend=route.model_used, route_reason=route.reason, failures=route.failures or None,
                     failovers=[attrs.asdict(f) for f in route.failovers] or None,
                     hedge=route.hedge.winner and attrs.asdict(route.hedge),
                     duration_s=round(clock() - started, 4))
        log.info("request %s", orjson.dumps(entry, default=str).decode())


def _strategy(request: web.Request, model: str) -> str:
    """The model id, or the ``x-glm-route`` header over it, picks the routing strategy."""
    cfg = request.app[CONFIG]
    model_ids = request.app[MODEL_IDS]
    if model not in model_ids:
        raise ModelNotFound(f"model {model!r} is not served here; use one of: {', '.join(model_ids)}",
                            param="model", code="model_not_found")
    role = model_ids[model]
    header = request.headers.get("x-glm-route")
    if header is not None:
        choice = header.strip().lower()
        if choice not in ("local", "cloud", "auto"):
            raise InvalidRequest(f"x-glm-route must be local, cloud or auto (got {header!r})",
                                 param="x-glm-route", code="invalid_value")
        role = None if choice == "auto" else choice
    if role is None:
        return cfg.routing.strategy
    if role not in request.app[ROUTER].backends:
        raise NoBackend(f"backend {role!r} is disabled in the config", code="backend_disabled")
    return f"{role}_only"


async def list_models(request: web.Request) -> web.Response:
    created = request.app[STARTED]
    data = [
        {"id": model, "object": "model", "created": created, "owned_by": "glm-token-saver",
         "backend": role or "auto"}
        for model, role in request.app[MODEL_IDS].items()
    ]
    return json_response({"object": "list", "data": data})


async def health(request: web.Request) -> web.Response:
    app = request.app
    router = app[ROUTER]
    backends = app[HEALTH].report()
    now = app[CLOCK]()
    for name, state in router.states.report(now).items():
        backends[name].update(state)
        backends[name]["rate_limits"] = {
            window: {"limit": rl.limit, "remaining": rl.remaining,
                     "reset_s": round(max(0.0, rl.seen_at + rl.reset_s - now), 1) if rl.reset_s is not None else None}
            for window, rl in router.backends[name].rate_limits.items()
        }
    up = [name for name, info in backends.items() if info["state"] == "ok"]
    # Liveness: the gateway answers 200 while it runs; "status" says whether anything can serve.
    return json_response({
        "status": "ok" if up else "degraded",
        "strategy": app[CONFIG].routing.strategy,
        "token_counter": router.counter.method,
        "backends": backends,
    })
