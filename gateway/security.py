"""Gateway keys and per-client limits: who may spend the owner's cloud budget, and how fast.

- With ``auth.keys`` set, ``/v1/*``, ``/chat/completions``, ``/models`` and ``/stats`` need
  ``Authorization: Bearer <key>``, or ``x-api-key: <key>`` as Anthropic's clients send it
  (``/health`` and ``/metrics`` by config). Keys are compared
  in constant time, every key every time, and are never logged: a client is known by the
  *number* of its key (``key#2``), or by its address when no keys are configured.

Limits per client live in :mod:`gateway.limits`.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from config import GatewayConfig
from gateway.errors import APIError, Handler
from gateway.keys import CLIENT, CONFIG


class Unauthorized(APIError):
    status = 401
    type = "authentication_error"


def needs_key(path: str, cfg: GatewayConfig) -> bool:
    if path == "/health":
        return cfg.auth.protect_health
    if path == "/metrics":
        return cfg.auth.protect_metrics
    return True


def match_key(header: str, keys: tuple[str, ...], bare: bool = False) -> int | None:
    """The index of the key ``header`` carries: ``Bearer <key>``, or the key alone (``bare``:
    the ``x-api-key`` header)."""
    scheme, _, token = ("bearer", "", header) if bare else header.partition(" ")
    found = None
    for i, key in enumerate(keys):  # no early exit: the time taken says nothing about which matched
        if hmac.compare_digest(token.strip().encode(), key.encode()):
            found = i
    return found if scheme.lower() == "bearer" else None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    cfg = request.app[CONFIG]
    keys = cfg.auth.active_keys
    client = f"addr:{request.remote}"
    if keys and needs_key(request.path, cfg):
        headers = request.headers
        if "x-api-key" in headers:  # Anthropic's clients (ANTHROPIC_API_KEY); ANTHROPIC_AUTH_TOKEN sends Bearer
            found = match_key(headers["x-api-key"], keys, bare=True)
        else:
            found = match_key(headers.get("Authorization", ""), keys)
        if found is None:
            message = ("invalid gateway key" if "Authorization" in headers or "x-api-key" in headers
                       else "missing gateway key: send Authorization: Bearer <key> (or x-api-key: <key>)")
            raise Unauthorized(message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        client = f"key#{found + 1}"
    request[CLIENT] = client
    return await handler(request)
