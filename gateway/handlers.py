"""HTTP handlers. Thin: parse, ask routing, hand the stream to the relay, log one line.

Errors are raised, never swallowed here (only noted for accounting on the way out):
:func:`gateway.errors.error_middleware` renders them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any, Protocol

import attrs
import orjson
from aiohttp import web

from backends import BackendError
from config import TIERS
from config.schema import STRATEGIES
from gateway.anthropic import models as anthropic_models
from gateway.errors import (
    APIError,
    InvalidRequest,
    ModelNotFound,
    NoBackend,
    json_response,
    retry_after_header,
    wants_anthropic,
)
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
from gateway.sse import OpenAIWire, StreamRelay, Wire
from gateway.stats import stats
from gateway.validation import parse_chat_request
from routing import Outcome, Route, Router
from routing.assemble import collect
from routing.errors import ConversationStopped, RoutingError

log = logging.getLogger("gateway.request")


class Parsed(Protocol):
    """A request as a front parsed it: the internal (OpenAI-shaped) body and what serving needs."""

    body: dict[str, Any]
    model: str | None
    stream: bool
    non_text_parts: frozenset[str]
    max_tokens_is_ceiling: bool  # routing.Router.route's ``ceiling``


class Front(Protocol):
    """What differs between the APIs the gateway speaks: how an answer is written."""

    api: str  # the ledger's and the metrics' label: openai | anthropic

    def wire(self, route: Route, request_id: str) -> Wire: ...

    def answer(self, data: dict[str, Any], tally: Outcome, request_id: str) -> dict[str, Any]: ...


@attrs.frozen
class OpenAIFront:
    include_usage: bool
    api = "openai"

    def wire(self, route: Route, request_id: str) -> Wire:
        return OpenAIWire(self.include_usage)

    def answer(self, data: dict[str, Any], tally: Outcome, request_id: str) -> dict[str, Any]:
        return data


async def chat_completions(request: web.Request) -> web.StreamResponse:
    request.app[LIMITS].admit(request[CLIENT])
    chat = parse_chat_request(await request.read(), request.headers.get("Content-Type"), request.app[CONFIG].limits)
    return await serve(request, chat, OpenAIFront(chat.include_usage))


async def serve(request: web.Request, chat: Parsed, front: Front) -> web.StreamResponse:
    """Route one parsed request and answer it through ``front``: the relay or the assembler
    reads the supervisor's events, and accounting records the request once, whatever happens."""
    app = request.app
    cfg, clock = app[CONFIG], app[CLOCK]
    started = clock()
    rid = request[REQUEST_ID]
    limits = app[LIMITS]
    strategy, pin = strategy_for(request, chat.model)
    router = app[ROUTER]
    try:
        route = await router.admit(chat.body, strategy, pin, ceiling=chat.max_tokens_is_ceiling)
    except RoutingError as exc:
        accountant = app[ACCOUNTANT]
        accountant.record(accountant.refused(request_id=rid, strategy=strategy, stream=chat.stream, api=front.api,
                                             at=app[WALL_CLOCK](), error=type(exc).__name__,
                                             guard=exc.reason if isinstance(exc, ConversationStopped) else None))
        raise
    if cfg.logging.log_bodies:
        log.debug("request %s body %s", rid, orjson.dumps(chat.body).decode())

    headers = {"x-request-id": rid, "request-id": rid}
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
        row = accountant.row(route, tally, request_id=rid, status=status, stream=chat.stream, api=front.api,
                             started=wall_started,
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
            relay = StreamRelay(request, tally=tally, wire=front.wire(route, rid), headers=headers,
                                keepalive_s=cfg.server.keepalive_s, clock=clock,
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
        return json_response(front.answer(data, tally, rid), headers=headers)
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


def _log_entry(row: dict[str, Any], chat: Parsed, tally: Outcome, client: str,
               failure: BackendError | APIError | None, dropped: list[str]) -> dict[str, Any]:
    """The per-request log line: the ledger row, minus zeros, plus what only the log needs."""
    # Truthiness, not comparisons with None and zeros: a comparison per field (some are dicts)
    # was most of this line's cost. The usage_by_backend column is by_backend's JSON: once is enough.
    entry = {k: v for k, v in row.items() if (v or k in ("status", "savings")) and k != "usage_by_backend"}
    entry.update(model=chat.model, client=client, failures=tally.failures or None,
                 dropped={name: sorted(chat.non_text_parts) for name in dropped} or None)
    if failure is not None:  # refused before the answer started: what the client was told
        entry["http_status"] = failure.status
        sent = retry_after_header(failure.retry_after) if isinstance(failure, BackendError) else failure.headers
        if sent.get("Retry-After"):
            entry["retry_after_s"] = int(sent["Retry-After"])
    return entry


def _dropping(router: Router, chat: Parsed, names: list[str]) -> list[str]:
    """Those of backends ``names`` that drop this request's non-text parts: a backend that takes
    no images gets the text parts only (its ``upstream_body``). Routing avoids it for such turns
    when another backend takes images; otherwise the client is told, never left to guess."""
    if not chat.non_text_parts:
        return []
    return [name for name in names if not router.backends[name].caps.images]


def _drop_header(chat: Parsed, dropping: list[str]) -> dict[str, str]:
    return {"x-glm-dropped": ",".join(sorted(chat.non_text_parts))} if dropping else {}


def strategy_for(request: web.Request, model: str | None) -> tuple[str, str | None]:
    """The routing strategy and the pinned backend, if any: the model id (one of ours, or one
    that ``models.aliases`` maps, such as Claude Code's ``claude-*``), or the ``x-glm-route``
    header over it, picks them."""
    cfg = request.app[CONFIG]
    model_ids = request.app[MODEL_IDS]
    if not model:
        # OpenAI's rule too: a client that forgot the field (or sent it under another name)
        # must learn why, not get whichever model a default picks.
        raise InvalidRequest(f"you must provide a model parameter; use one of: {', '.join(model_ids)}",
                             param="model", code="missing_required_parameter")
    strategy: str | None = None
    if model in model_ids:
        pin = model_ids[model]
    else:
        target = cfg.models.alias(model)
        if target is None:
            hint = " (its backend is disabled in the config)" if model in cfg.model_ids() else ""
            raise ModelNotFound(f"model {model!r} is not served here{hint}; use one of: {', '.join(model_ids)}",
                                param="model", code="model_not_found")
        pin, strategy = _alias(cfg, model, target)
    header = request.headers.get("x-glm-route")
    if header is not None:
        choice = header.strip().lower()
        if choice not in ("local", "cloud", "auto"):
            raise InvalidRequest(f"x-glm-route must be local, cloud or auto (got {header!r})",
                                 param="x-glm-route", code="invalid_value")
        pin, strategy = (None, None) if choice == "auto" else (("tier", choice), None)
    if pin is None:
        return strategy or cfg.routing.strategy, None
    kind, which = pin
    if kind == "backend":
        return cfg.routing.strategy, which
    # A model id's own pin names an enabled tier (app.MODEL_IDS lists no other); a header's or
    # an alias's may not.
    if pin is not model_ids.get(model) and not cfg.tier(which):
        raise NoBackend(f"no {which} backend is enabled in the config", code="backend_disabled")
    return f"{which}_only", None


def _alias(cfg: Any, model: str, target: str) -> tuple[tuple[str, str] | None, str | None]:
    """An alias's target as (pin, strategy)."""
    if target in ("local", "cloud"):
        return ("tier", target), None
    if target in STRATEGIES:
        return None, target
    if target in cfg.backends:
        if not cfg.backend(target).enabled:
            raise NoBackend(f"model {model!r} maps to backend {target!r}, which is disabled in the config",
                            code="backend_disabled")
        return ("backend", target), None
    return None, None  # auto: routed


async def list_models(request: web.Request) -> web.Response:
    if wants_anthropic(request):
        return anthropic_models.list_models(request)
    return json_response({"object": "list", "data": _model_entries(request)})


async def get_model(request: web.Request) -> web.Response:
    model = request.match_info["model"]
    if wants_anthropic(request):
        return anthropic_models.get_model(request, model)
    for entry in _model_entries(request):
        if entry["id"] == model:
            return json_response(entry)
    raise ModelNotFound(f"model {model!r} is not served here; use one of: {', '.join(request.app[MODEL_IDS])}",
                        param="model", code="model_not_found")


def _model_entries(request: web.Request) -> list[dict[str, Any]]:
    created = int(request.app[STARTED])
    return [
        {"id": model, "object": "model", "created": created, "owned_by": "glm-token-saver",
         # "backend": what the id pins (a tier, or a backend by name); "pins" says which of the two.
         "backend": "auto" if pin is None else pin[1], "pins": None if pin is None else pin[0]}
        for model, pin in request.app[MODEL_IDS].items()
    ]


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
