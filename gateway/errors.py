"""Client-facing errors, and the one middleware that renders every error in the caller's API
shape: OpenAI JSON, or Anthropic's for the Messages front (:func:`anthropic_error`).

    APIError                   an error the client should see, with its HTTP status
    ├── InvalidRequest         400 (or 413/415): the body is wrong
    ├── ModelNotFound          404: an id the gateway does not serve
    └── NoBackend              503: the pinned backend is disabled

Routing's :class:`routing.errors.NoBackendAvailable` becomes a 429 with ``retry-after`` when
the wait is temporary, else a 503 naming why each backend was skipped;
:class:`routing.errors.ConversationStopped` (the runaway guard) a 400 that clients do not retry. Backend errors
(:mod:`backends.errors`) are rendered here too, with the upstream's status, so
a Cerebras 429 reaches Cline as a 429 with ``retry-after``. Handlers never catch ``Exception``;
anything unexpected becomes a 500 with no traceback in the body.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web

from backends.errors import BackendError
from routing.errors import ConversationStopped, NoBackendAvailable

log = logging.getLogger("gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class APIError(Exception):
    status = 400
    type = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 status: int | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}


class InvalidRequest(APIError):
    pass


class ModelNotFound(APIError):
    status = 404
    type = "invalid_request_error"


class NoBackend(APIError):
    status = 503
    type = "service_unavailable"


def error_body(message: str, type: str, param: str | None = None,
               code: str | int | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def backend_error_body(exc: BackendError) -> dict[str, Any]:
    """OpenAI-shaped body for an upstream failure; names the backend, never its key."""
    body = error_body(f"{exc.backend} backend: {exc.message}", exc.type, exc.param,
                      exc.code if exc.code is not None else exc.status)
    body["error"]["backend"] = exc.backend
    return body


# The Anthropic front's paths, and how its clients say who they are on shared ones (/v1/models).
ANTHROPIC_PATHS = ("/v1/messages", "/messages")
ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                   403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                   429: "rate_limit_error", 504: "timeout_error", 529: "overloaded_error"}


def wants_anthropic(request: web.Request) -> bool:
    """Is this caller speaking Anthropic's Messages API (its paths, or ``anthropic-version``)?"""
    return request.path.startswith(ANTHROPIC_PATHS) or "anthropic-version" in request.headers


def anthropic_error(error: dict[str, Any], status: int) -> tuple[dict[str, Any], int]:
    """An error object of ours as Anthropic's body and status. The type follows the status, as
    Anthropic's does (the SDK picks its exception by status); "no backend can serve now" is
    Anthropic's 529 ``overloaded_error``, which Claude Code knows to retry."""
    if status == 503:
        status = 529
    kind = ANTHROPIC_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    message = error.get("message") or "error"
    if error.get("param") and not message.startswith(str(error["param"])):
        message = f"{error['param']}: {message}"
    return {"type": "error", "error": {"type": kind, "message": message}}, status


def retry_after_header(seconds: float | None) -> dict[str, str]:
    # Cline's retry reads delta seconds; round up so it never comes back a moment too early.
    return {} if seconds is None else {"Retry-After": str(max(1, math.ceil(seconds)))}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, headers=headers,
                        content_type="application/json")


# The "error" object of each error response the middleware renders, so the request log can
# write a line for requests that were refused before a handler logged them.
ERROR = web.ResponseKey("error", dict)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except APIError as exc:
        body, status, headers = error_body(exc.message, exc.type, exc.param, exc.code), exc.status, exc.headers
    except ConversationStopped as exc:
        # 400, not 429: Cline's classic task loop, the Cline CLI/SDK and the AI SDK retry a 429 (the
        # CLI re-requests at once), and 401-428 read as a key problem in Cline. A 400 is retried
        # by none of the SDKs (x-should-retry: false tells the Stainless ones so too); classic Cline
        # tries three more times in 14 s, which the guard refuses at no model cost. The message
        # starts with the status, because the Cline SDK classifies errors by their text.
        body = error_body(f"400 {exc}", "invalid_request_error", None, "conversation_stopped")
        body["error"]["guard"] = exc.reason
        status, headers = 400, {"x-should-retry": "false"}
    except NoBackendAvailable as exc:
        # Temporary (cooldown, rate limit): a 429 with retry-after, which Cline retries by itself.
        status, kind = (429, "rate_limit_exceeded") if exc.retry_after is not None else (503, "service_unavailable")
        body = error_body(str(exc), kind, None, "no_backend_available")
        headers = retry_after_header(exc.retry_after)
    except BackendError as exc:
        body, status, headers = backend_error_body(exc), exc.status, retry_after_header(exc.retry_after)
        headers["x-glm-backend"] = exc.backend
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # aiohttp's own 404/405/413...: same JSON shape as everything else.
        kind = "not_found_error" if exc.status == 404 else "invalid_request_error"
        message = exc.reason if exc.status != 413 else exc.text or exc.reason
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        body, status = error_body(message or "error", kind, None, exc.status), exc.status
    except ConnectionResetError:
        # The client is gone (its socket closed under a write). aiohttp takes a response it
        # cannot send as a premature disconnect, quietly; an exception it would log as a crash.
        # 499 is nginx's "client closed request": only the access log ever sees it.
        response = web.Response(status=499)
        response[ERROR] = error_body("the client closed the connection", "client_closed")["error"]
        return response
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        body = error_body("internal gateway error; see the gateway log", "server_error", None, 500)
        status, headers = 500, {}
    error = body["error"]
    if wants_anthropic(request):
        body, status = anthropic_error(error, status)
        if 400 <= status < 500 and status != 429:
            headers = {**headers, "x-should-retry": "false"}  # as Anthropic does: a 4xx is the caller's to fix
    response = json_response(body, status, headers)
    response[ERROR] = error
    return response
