"""HTTP handlers. Thin: parse, ask routing, hand the stream to the relay, log one line.

Errors are raised, never caught here: :func:`gateway.errors.error_middleware` renders them.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web

from backends import BackendError
from gateway.errors import ModelNotFound, NoBackend, json_response
from gateway.keys import BACKENDS, CLOCK, CONFIG, HEALTH, MODEL_IDS, REQUEST_ID, STARTED
from gateway.sse import StreamRelay
from gateway.validation import parse_chat_request
from routing import static_route

log = logging.getLogger("gateway.request")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def chat_completions(request: web.Request) -> web.StreamResponse:
    app = request.app
    cfg, clock = app[CONFIG], app[CLOCK]
    started = clock()
    rid = request[REQUEST_ID]
    chat = parse_chat_request(await request.read(), request.headers.get("Content-Type"))
    model_ids = app[MODEL_IDS]
    model = chat.model or cfg.models.routed
    if model not in model_ids:
        raise ModelNotFound(f"model {model!r} is not served here; use one of: {', '.join(model_ids)}",
                            param="model", code="model_not_found")
    decision = static_route(model_ids[model], cfg.routing.default_backend)
    backend = app[BACKENDS].get(decision.primary)
    if backend is None:
        raise NoBackend(f"backend {decision.primary!r} is disabled in the config", code="backend_disabled")
    if cfg.logging.log_bodies:
        log.debug("request %s body %s", rid, orjson.dumps(chat.body).decode())

    headers = {"x-glm-backend": backend.name, "x-glm-route-reason": decision.reason, "x-request-id": rid}
    entry: dict[str, Any] = {"id": rid, "model": model, "backend": backend.name,
                             "route_reason": decision.reason, "stream": chat.stream}
    try:
        if chat.stream:
            relay = StreamRelay(request, headers=headers, keepalive_s=cfg.server.keepalive_s,
                                include_usage=chat.include_usage, model_used=backend.name, clock=clock)
            try:
                await relay.run(backend.stream(chat.body))
            finally:
                out = relay.outcome
                entry.update(status=out.status, ttft_s=out.ttft_s, chunks=out.chunks,
                             finish_reason=out.finish_reason, usage=out.usage,
                             error=str(out.error) if out.error else None)
            assert relay.response is not None
            return relay.response
        data = await backend.complete(chat.body)
        data["model_used"] = backend.name
        entry.update(status="ok", usage=data.get("usage"))
        return json_response(data, headers=headers)
    except BackendError as exc:
        entry.update(status="error", error=str(exc))
        raise
    finally:
        entry["duration_s"] = round(clock() - started, 4)
        log.info("request %s", orjson.dumps(entry, default=str).decode())


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
    backends = app[HEALTH].report()
    up = [name for name, info in backends.items() if info["state"] == "ok"]
    # Liveness: the gateway answers 200 while it runs; "status" says whether anything can serve.
    return json_response({
        "status": "ok" if up else "degraded",
        "default_backend": app[CONFIG].routing.default_backend,
        "backends": backends,
    })
