"""``GET /v1/models`` and ``/v1/models/{id}`` in Anthropic's shape, for callers that send
``anthropic-version`` (:func:`gateway.errors.wants_anthropic`)."""

from __future__ import annotations

import datetime
from typing import Any

from aiohttp import web

from gateway.errors import ModelNotFound, json_response
from gateway.keys import MODEL_IDS, STARTED


def model_entries(request: web.Request) -> list[dict[str, Any]]:
    created = datetime.datetime.fromtimestamp(int(request.app[STARTED]), datetime.timezone.utc)
    stamp = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    return [{"type": "model", "id": model, "display_name": model, "created_at": stamp}
            for model in request.app[MODEL_IDS]]


def list_models(request: web.Request) -> web.Response:
    data = model_entries(request)
    return json_response({"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                          "last_id": data[-1]["id"] if data else None})


def get_model(request: web.Request, model: str) -> web.Response:
    for entry in model_entries(request):
        if entry["id"] == model:
            return json_response(entry)
    raise ModelNotFound(f"model: {model} is not served here; use one of: {', '.join(request.app[MODEL_IDS])}")
