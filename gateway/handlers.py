"""HTTP handlers. Thin: parse, ask routing, hand the stream to the relay, log one line.

Errors are raised, never swallowed here (only noted for accounting on the way out):
:func:`gateway.errors.error_middleware` renders them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

import orjson
from aiohttp import web

from backends import BackendError
from gateway.errors import APIError, InvalidRequest, ModelNotFound, NoBackend, json_response
from gateway.keys import (
    ACCOUNTANT,
    CLIENT,
    CLOCK,
    CONFIG,
    HEALTH,
    LIMITS,
    MODEL_IDS,
    REQUEST_ID,
    ROUTER,
    STARTED,
    STREAMS,
    WALL_CLOCK,
)
from gateway.sse import StreamRelay
from gateway.stats import stats
from gateway.validation import parse_chat_request
from routing import NoBackendAvailable

log = logging.getLogger("gateway.request")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    app = request.app
    cfg, clock = app[CONFIG], app[CLOCK]
    started = clock()
    rid = request[REQUEST_ID]
    limits = app[LIMITS]
    limits.admit(request[CLIENT])
    chat = parse_chat_request(await request.read(), request.headers.get("Content-Type"), cfg.limits)
    strategy = _strategy(request, chat.model or cfg.models.routed)
    router = app[ROUTER]
    try:
        route = await router.admit(chat.body, strategy)
    except NoBackendAvailable:
        accountant = app[ACCOUNTANT]
        accountant.record(accountant.refused(request_id=rid, strategy=strategy, stream=chat.stream,
                                             at=app[WALL_CLOCK]()))
        raise
    if cfg.logging.log_bodies:
        log.debug("request %s body %s", rid, orjson.dumps(chat.body).decode())

    headers = {"x-request-id": rid}
    wall_started = app[WALL_CLOCK]()
    accountant = app[ACCOUNTANT]
    recorded = False

    def account(status: str, error: str | None = None) -> asyncio.Future[None]:
        """Record the request once; returns the ledger write, which callers await where a client
        is still waiting for the answer (so nobody holds an answer the ledger could lose)."""
        nonlocal recorded
        recorded = True
        row = accountant.row(route, request_id=rid, status=status, stream=chat.stream, started=wall_started,
                             ended=app[WALL_CLOCK](), duration_s=clock() - started, error=error)
        written = asyncio.shield(accountant.record(row))  # first: the commit overlaps the log line
        if log.isEnabledFor(logging.INFO):  # the entry is built only when it will be written
            log.info("request %s", orjson.dumps(_log_entry(row, chat.model, route), default=str).decode())
        return written

    status, error = "error", None
    try:
        if chat.stream:
            relay = StreamRelay(request, served=route, headers=headers, keepalive_s=cfg.server.keepalive_s,
                                include_usage=chat.include_usage, clock=clock,
                                before_done=lambda: account("ok"), active=app[STREAMS])
            try:
                with limits.stream_slot(request[CLIENT]):
                    await relay.run(router.stream(route, chat.body))
            finally:
                if relay.outcome.status != "pending":  # pending: refused before it started
                    status = relay.outcome.status
                    error = type(relay.outcome.error).__name__ if relay.outcome.error else None
                if relay.aborted:
                    error = "Shutdown"
            assert relay.response is not None
            return relay.response
        data = await router.complete(route, chat.body)
        data["model_used"] = route.model_used
        status = "ok"
        await account("ok")
        headers.update({"x-glm-backend": route.backend, "x-glm-route-reason": route.reason})
        return json_response(data, headers=headers)
    except (BackendError, APIError) as exc:
        status, error = "error", type(exc).__name__
        raise
    except asyncio.CancelledError:
        if not chat.stream:  # a stream's outcome says itself whether it was cancelled or aborted
            status = "cancelled"
        raise
    finally:
        if not recorded:
            account(status, error)  # failed or cancelled: nobody waits for an answer, so neither do we


def _log_entry(row: dict[str, Any], model: str | None, route: Any) -> dict[str, Any]:
    """The per-request log line: the ledger row, minus zeros, plus what only the log needs."""
    entry = {k: v for k, v in row.items() if v not in (None, 0, 0.0) or k in ("status", "savings")}
    entry.update(model=model, failures=route.failures or None)
    return entry


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
    created = int(request.app[STARTED])
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
    budget = app[ACCOUNTANT].budget
    over = budget.exceeded()
    if "cloud" in backends:
        backends["cloud"]["over_budget"] = over
    up = [name for name, info in backends.items() if info["state"] == "ok" and not info.get("over_budget")]
    ledger = app[ACCOUNTANT].ledger
    # Liveness: the gateway answers 200 while it runs; "status" says whether anything can serve.
    return json_response({
        "status": "ok" if up else "degraded",
        "strategy": app[CONFIG].routing.strategy,
        "token_counter": router.counter.method,
        "backends": backends,
        "budget": budget.report(),
        "runtime": _runtime(app),
        "ledger": {"path": ledger.path, "write_errors": ledger.write_errors, "unwritten_rows": ledger.pending},
    })


def _runtime(app: web.Application) -> dict[str, Any]:
    """Live tasks and streams, so a leak shows on /health (the soak runner watches these)."""
    tasks = asyncio.all_tasks()
    kinds = collections.Counter(getattr(t.get_coro(), "__qualname__", "?") for t in tasks)
    return {"tasks": len(tasks), "tasks_by_kind": dict(kinds.most_common(8)), "streams": len(app[STREAMS])}


async def get_stats(request: web.Request) -> web.Response:
    app = request.app
    accountant = app[ACCOUNTANT]
    await accountant.flush()  # every finished request is in the ledger before it is summed
    body = await stats(accountant.ledger, app[WALL_CLOCK](), app[STARTED])
    body["budget"] = accountant.budget.report()
    return json_response(body)
