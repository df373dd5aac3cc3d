"""Per-client limits: request rate (a token bucket per client) and concurrent streams (overall
and per client). Exceeding either is a 429 with ``retry-after``, never a hang.

A client is ``key#N`` (the number of its gateway key) or ``addr:<ip>`` when no keys are set.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from config import GatewayConfig
from gateway.errors import APIError, retry_after_header


class TooMany(APIError):
    status = 429
    type = "rate_limit_exceeded"


class Limits:
    """Request-rate buckets and stream slots per client. ``clock`` is monotonic seconds."""

    def __init__(self, cfg: GatewayConfig, clock: Callable[[], float]) -> None:
        self.cfg = cfg.limits
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, stamp)
        self.streams: dict[str, int] = {}
        self.total_streams = 0

    def admit(self, client: str) -> None:
        """One request from ``client``: allowed, or a 429 saying when to come back."""
        rate = self.cfg.requests_per_minute_per_key / 60.0
        now = self.clock()
        tokens, stamp = self.buckets.get(client, (float(self.cfg.requests_per_minute_per_key), now))
        tokens = min(float(self.cfg.requests_per_minute_per_key), tokens + (now - stamp) * rate)
        if tokens < 1:
            wait = (1 - tokens) / rate
            raise TooMany(f"rate limit: {self.cfg.requests_per_minute_per_key} requests per minute per client",
                          code="client_rate_limited", headers=retry_after_header(wait))
        self.buckets[client] = (tokens - 1, now)
        if len(self.buckets) > 10_000:  # forget idle clients: a full bucket is the default anyway
            self.buckets = {c: b for c, b in self.buckets.items() if now - b[1] < 120}

    @contextlib.contextmanager
    def stream_slot(self, client: str) -> Iterator[None]:
        if self.total_streams >= self.cfg.max_streams:
            raise TooMany(f"the gateway is relaying its maximum of {self.cfg.max_streams} streams",
                          code="too_many_streams", headers=retry_after_header(1))
        if self.streams.get(client, 0) >= self.cfg.max_streams_per_key:
            raise TooMany(f"at most {self.cfg.max_streams_per_key} concurrent streams per client",
                          code="too_many_streams", headers=retry_after_header(1))
        self.total_streams += 1
        self.streams[client] = self.streams.get(client, 0) + 1
        try:
            yield
        finally:
            self.total_streams -= 1
            left = self.streams[client] - 1
            if left:
                self.streams[client] = left
            else:
                del self.streams[client]
