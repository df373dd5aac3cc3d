"""Typed application state keys (``web.AppKey``): the app's only shared state, no globals."""

from __future__ import annotations

from typing import Callable

from aiohttp import web

from config import GatewayConfig
from gateway.health import HealthMonitor
from routing import Router

CONFIG = web.AppKey("config", GatewayConfig)
HEALTH = web.AppKey("health", HealthMonitor)
ROUTER = web.AppKey("router", Router)
CLOCK = web.AppKey("clock", Callable[[], float])
STARTED = web.AppKey("started", int)
# model id -> pinned role, or None for the routed id; only ids of enabled backends.
MODEL_IDS = web.AppKey("model_ids", dict[str, str | None])
REQUEST_ID = web.RequestKey("request_id", str)
