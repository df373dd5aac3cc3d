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
from config import TIERS
from gateway.errors import APIError, InvalidRequest, ModelNotFound, NoBackend, json_response, retry_after_header
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
from gateway.logs import LOGGED
from gateway.sse import StreamRelay
from gateway.stats import stats
from gateway.validation import ChatRequest, parse_chat_request
from routing import Outcome, Router
from routing.assemble import collect
from routing.errors import ConversationStopped, RoutingError

log = logging.getLogger("gateway.request")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    app = request.app
    cfg, clock = app[CONFIG], app[CLOCK]
    started = clock()
    rid = request[REQUEST_ID]
    limits = app[LIMITS]
    limits.admit(request[CLIENT])
    chat = parse_chat_request(await request.read(), request.headers.get("Content-Type"), cfg.limits)
    strategy, pin = _strategy(request, chat.model)
    router = app[ROUTER]
    try:
        route = await router.admit(chat.body, strategy, pin)
    except RoutingError as exc:
        accountant = app[ACCOUNTANT]
        accountant.record(accountant.refused(request_id=rid, strategy=strategy, stream=chat.stream,
                                             at=app[WALL_CLOCK](), error=type(exc).__name__,
                                             guard=exc.reason if isinstance(exc, ConversationStopped) else None))
        raise
    if cfg.logging.log_bodies:
        log.debug("request %s body %s", rid, orjson.dumps(chat.body).decode())

    headers = {"x-request-id": rid}
    # What happened, folded from the request's events by whichever consumer reads them.
    tally = Outcome.of(route)
    supervision = router.stream(route, chat.body)
    wall_started = app[WALL_CLOCK]()
    accountant = app[ACCOUNTANT]
    recorded = False
    failure: BackendError | APIError | None = None  # what the client got instead of an answer

    def account(status: str, error: str | None = None) -> asyncio.Future[None]:
        """Record the request once; returns the ledger write, which callers await where a client
        is still waiting for the answer (so nobody holds an answer the ledger could lose)."""
        nonlocal recorded
        recorded = True
        request[LOGGED] = True
        for event in supervision.epilogue():  # a stream cut short still owes what it consumed
            tally.fold(event)
        row = accountant.row(route, tally, request_id=rid, status=status, stream=chat.stream, started=wall_started,
                             ended=app[WALL_CLOCK](), duration_s=clock() - started, error=error)
        written = asyncio.shield(accountant.record(row))  # first: the commit overlaps the log line
        # The runaway guard's per-conversation cap needs what each of its requests cost the cloud.
        router.spent(route, row["cloud_cost"])
        dropped = _dropping(router, chat, list(tally.served_by))
        for name in dropped:
            log.warning("request %s: the %s backend takes no %s parts; they were dropped", rid, name,
                        ", ".join(sorted(chat.non_text_parts)))
        if log.isEnabledFor(logging.INFO):  # the entry is built only when it will be written
            entry = _log_entry(row, chat, tally, request[CLIENT], failure, dropped)
            log.info("request %s", orjson.dumps(entry, default=str).decode())
        return written

    status, error = "error", None
    try:
        if chat.stream:
            # x-glm-dropped speaks for the backend serving when the response is committed (a
            # slow first token commits early: then the log line says what really happened).
            relay = StreamRelay(request, tally=tally, headers=headers, keepalive_s=cfg.server.keepalive_s,
                                include_usage=chat.include_usage, clock=clock,
                                before_done=lambda: account("ok"), active=app[STREAMS],
                                headers_for=(lambda name: _drop_header(chat, _dropping(router, chat, [name])))
                                if chat.non_text_parts else None)
            try:
                with limits.stream_slot(request[CLIENT]):
                    await relay.run(supervision.events())
            finally:
                if relay.outcome.status != "pending":  # pending: refused before it started
                    status = relay.outcome.status
                    error = type(relay.outcome.error).__name__ if relay.outcome.error else None
                if relay.aborted:
                    error = "Shutdown"
            assert relay.response is not None
            return relay.response
        data = await collect(supervision.events(), tally)
        status = "ok"
        await account("ok")
        headers.update({"x-glm-backend": tally.backend, "x-glm-route-reason": tally.reason,
                        **_drop_header(chat, _dropping(router, chat, list(tally.served_by)))})
        return json_response(data, headers=headers)
    except (BackendError, APIError) as exc:
        status, error, failure = "error", type(exc).__name__, exc
        raise
    except asyncio.CancelledError:
        if not chat.stream:  # a stream's outcome says itself whether it was cancelled or aborted
            status = "cancelled"
        raise
    finally:
        if not recorded:
            account(status, error)  # failed or cancelled: nobody waits for an answer, so neither do we


def _log_entry(row: dict[str, Any], chat: ChatRequest, tally: Outcome, client: str,
               failure: BackendError | APIError | None, dropped: list[str]) -> dict[str, Any]:
    """The per-request log line: the ledger row, minus zeros, plus what only the log needs."""
    entry = {k: v for k, v in row.items() if v not in (None, 0, 0.0) or k in ("status", "savings")}
    entry.update(model=chat.model, client=client, failures=tally.failures or None,
                 dropped={name: sorted(chat.non_text_parts) for name in dropped} or None)
    if failure is not None:  # refused before the answer started: what the client was told
        entry["http_status"] = failure.status
        sent = retry_after_header(failure.retry_after) if isinstance(failure, BackendError) else failure.headers
        if sent.get("Retry-After"):
            entry["retry_after_s"] = int(sent["Retry-After"])
    return entry


def _dropping(router: Router, chat: ChatRequest, names: list[str]) -> list[str]:
    """Those of backends ``names`` that drop this request's non-text parts: a backend that takes
    no images gets the text parts only (its ``upstream_body``). Routing avoids it for such turns
    when another backend takes images; otherwise the client is told, never left to guess."""
    if not chat.non_text_parts:
        return []
    return [name for name in names if not router.backends[name].caps.images]


def _drop_header(chat: ChatRequest, dropping: list[str]) -> dict[str, str]:
    return {"x-glm-dropped": ",".join(sorted(chat.non_text_parts))} if dropping else {}


def _strategy(request: web.Request, model: str | None) -> tuple[str, str | None]:
    """The routing strategy and the pinned backend, if any: the model id, or the ``x-glm-route``
    header over it, picks them."""
    cfg = request.app[CONFIG]
    model_ids = request.app[MODEL_IDS]
    if not model:
        # OpenAI's rule too: a client that forgot the field (or sent it under another name)
        # must learn why, not get whichever model a default picks.
        raise InvalidRequest(f"you must provide a model parameter; use one of: {', '.join(model_ids)}",
                             param="model", code="missing_required_parameter")
    if model not in model_ids:
        hint = ""
        if model in cfg.model_ids():
            hint = " (its backend is disabled in the config)"
        raise ModelNotFound(f"model {model!r} is not served here{hint}; use one of: {', '.join(model_ids)}",
                            param="model", code="model_not_found")
    pin = model_ids[model]
    header = request.headers.get("x-glm-route")
    if header is not None:
        choice = header.strip().lower()
        if choice not in ("local", "cloud", "auto"):
            raise InvalidRequest(f"x-glm-route must be local, cloud or auto (got {header!r})",
                                 param="x-glm-route", code="invalid_value")
        pin = None if choice == "auto" else ("tier", choice)
    if pin is None:
        return cfg.routing.strategy, None
    kind, which = pin
    if kind == "backend":
        return cfg.routing.strategy, which
    if not cfg.tier(which):
        raise NoBackend(f"no {which} backend is enabled in the config", code="backend_disabled")
    return f"{which}_only", None


async def list_models(request: web.Request) -> web.Response:
    created = int(request.app[STARTED])
    data = [
        {"id": model, "object": "model", "created": created, "owned_by": "glm-token-saver",
         # "backend": what the id pins (a tier, or a backend by name); "pins" says which of the two.
         "backend": "auto" if pin is None else pin[1], "pins": None if pin is None else pin[0]}
        for model, pin in request.app[MODEL_IDS].items()
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
            for window, rl in router.states.rate_limits[name].items()
        }
    budget = app[ACCOUNTANT].budget
    over = budget.exceeded()
    for info in backends.values():
        if info["tier"] == "cloud":
            info["over_budget"] = over
    up = [name for name, info in backends.items() if info["state"] == "ok" and not info.get("over_budget")]
    ledger = app[ACCOUNTANT].ledger
    # Liveness: the gateway answers 200 while it runs; "status" says whether anything can serve.
    return json_response({
        "status": "ok" if up else "degraded",
        "strategy": app[CONFIG].routing.strategy,
        "token_counter": router.counter.method,
        "backends": backends,
        "tiers": {tier: [name for name in app[CONFIG].tier(tier) if name in backends] for tier in TIERS},
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
    classifier = app[ROUTER].classifier
    # Live, not from the ledger: each backend as routing sees it now (tier, speeds, load, cache).
    router = app[ROUTER]
    body["servers"] = {name: {"tier": router.backends[name].tier, **state}
                       for name, state in router.states.report(app[CLOCK]()).items()}
    body["classifier"] = {"method": app[CONFIG].routing.classifier.method, "threshold": classifier.threshold,
                          "model": classifier.scorer.meta if classifier.scorer else None}
    return json_response(body)
