"""The Anthropic Messages front: ``POST /v1/messages`` (streamed or not), ``POST
/v1/messages/count_tokens``; ``/v1/models`` in Anthropic's shape is :mod:`gateway.anthropic.models`.

The front is an adapter at the edge: its request becomes the internal body
(:mod:`gateway.anthropic.request`), and from there routing, escalation, the supervisor's
failover and accounting are the same as for the OpenAI front (:func:`gateway.handlers.serve`).
Only the answer's encoding differs (:mod:`gateway.anthropic.wire`). Errors come out in
Anthropic's shape from the one error middleware (:func:`gateway.errors.anthropic_error`).
"""

from __future__ import annotations

from typing import Any

import attrs
from aiohttp import web

from gateway.anthropic.request import parse_messages_request
from gateway.anthropic.wire import AnthropicWire, message_of
from gateway.errors import json_response
from gateway.handlers import serve, strategy_for
from gateway.keys import CLIENT, CONFIG, LIMITS, ROUTER
from gateway.sse import Wire
from routing import Outcome, Route
from routing.features import extract_features


@attrs.frozen
class AnthropicFront:
    model: str  # echoed as the client asked: Claude Code shows it
    prefill: str = ""
    api = "anthropic"

    def wire(self, route: Route, request_id: str) -> Wire:
        return AnthropicWire(f"msg_{request_id}", self.model, route.features.prompt.exact, self.prefill)

    def answer(self, data: dict[str, Any], tally: Outcome, request_id: str) -> dict[str, Any]:
        return message_of(data, f"msg_{request_id}", self.model, tally, self.prefill)


async def messages(request: web.Request) -> web.StreamResponse:
    request.app[LIMITS].admit(request[CLIENT])
    msg = parse_messages_request(await request.read(), request.headers.get("Content-Type"),
                                 request.app[CONFIG].limits)
    return await serve(request, msg, AnthropicFront(msg.model, msg.prefill))


async def count_tokens(request: web.Request) -> web.Response:
    """The prompt's size as the gateway itself counts it: the same count routing uses to check
    a request against a backend's context window."""
    request.app[LIMITS].admit(request[CLIENT])
    msg = parse_messages_request(await request.read(), request.headers.get("Content-Type"),
                                 request.app[CONFIG].limits, counting=True)
    strategy_for(request, msg.model)  # an id nothing serves is a 404 here too
    features = extract_features(msg.body, request.app[ROUTER].counter)
    return json_response({"input_tokens": features.prompt_tokens})
