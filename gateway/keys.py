"""Typed application state keys (``web.AppKey``): the app's only shared state, no globals."""

from __future__ import annotations

from typing import Callable

import attrs
from aiohttp import web
from prometheus_client import CollectorRegistry

from config import GatewayConfig
from gateway.accounting import Accountant
from gateway.health import HealthMonitor
from routing import Router

CONFIG = web.AppKey("config", GatewayConfig)
HEALTH = web.AppKey("health", HealthMonitor)
ROUTER = web.AppKey("router", Router)
CLOCK = web.AppKey("clock", Callable[[], float])
WALL_CLOCK = web.AppKey("wall_clock", Callable[[], float])
STARTED = web.AppKey("started", float)
REGISTRY = web.AppKey("registry", CollectorRegistry)
ACCOUNTANT = web.AppKey("accountant", Accountant)


@attrs.define
class Live:
    """Counts that change per request (read by the metrics gauges)."""

    streams: int = 0


LIVE = web.AppKey("live", Live)
# model id -> pinned role, or None for the routed id; only ids of enabled backends.
MODEL_IDS = web.AppKey("model_ids", dict[str, str | None])
REQUEST_ID = web.RequestKey("request_id", str)
