"""Typed application state keys (``web.AppKey``): the app's only shared state, no globals."""

from __future__ import annotations

from typing import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry

from backends import Clock
from config import GatewayConfig
from gateway.accounting import Accountant
from gateway.health import HealthMonitor
from gateway.limits import Limits
from gateway.sse import ActiveStreams
from routing import Router

CONFIG = web.AppKey("config", GatewayConfig)
HEALTH = web.AppKey("health", HealthMonitor)
ROUTER = web.AppKey("router", Router)
CLOCK = web.AppKey("clock", Clock)
WALL_CLOCK = web.AppKey("wall_clock", Callable[[], float])
STARTED = web.AppKey("started", float)
REGISTRY = web.AppKey("registry", CollectorRegistry)
ACCOUNTANT = web.AppKey("accountant", Accountant)


LIMITS = web.AppKey("limits", Limits)
STREAMS = web.AppKey("streams", ActiveStreams)
CLIENT = web.RequestKey("client", str)  # "key#N" or "addr:<ip>": never the key itself
# model id -> pinned role, or None for the routed id; only ids of enabled backends.
MODEL_IDS = web.AppKey("model_ids", dict[str, tuple[str, str] | None])  # id -> ("tier"|"backend", which)
REQUEST_ID = web.RequestKey("request_id", str)
NEW_ID = web.AppKey("new_id", Callable[[int], int])  # random bits for a request id (random.getrandbits)
