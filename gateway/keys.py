"""Typed application state keys (``web.AppKey``): the app's only shared state, no globals."""

from __future__ import annotations

from typing import Callable

from aiohttp import web

from backends import Backend
from config import GatewayConfig
from gateway.health import HealthMonitor

CONFIG = web.AppKey("config", GatewayConfig)
BACKENDS = web.AppKey("backends", dict[str, Backend])
HEALTH = web.AppKey("health", HealthMonitor)
CLOCK = web.AppKey("clock", Callable[[], float])
STARTED = web.AppKey("started", int)
# model id -> pinned role, or None for the routed id; only ids of enabled backends.
MODEL_IDS = web.AppKey("model_ids", dict[str, str | None])
REQUEST_ID = web.RequestKey("request_id", str)
