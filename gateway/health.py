"""Background health probes: one loop per enabled backend, latest result kept in memory.

    monitor = HealthMonitor(backends)
    await monitor.start()          # from the app's cleanup_ctx
    monitor.snapshot()["local"]    # Health(state="ok", ...)
    await monitor.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Callable, Mapping

from backends import Backend, Health

log = logging.getLogger("gateway.health")


class HealthMonitor:
    def __init__(self, backends: Mapping[str, Backend], clock: Callable[[], float] = time.monotonic) -> None:
        self.backends = backends
        self.clock = clock
        self._latest: dict[str, Health] = {name: Health("unknown") for name in backends}
        self._tasks: list[asyncio.Task[None]] = []

    def snapshot(self) -> dict[str, Health]:
        return dict(self._latest)

    async def probe(self, name: str) -> Health:
        health = await self.backends[name].health()
        previous = self._latest.get(name)
        if previous is None or previous.state != health.state:
            log.info("backend %s is %s%s", name, health.state,
                     f" ({health.detail})" if health.detail else "")
        self._latest[name] = health
        return health

    async def start(self) -> None:
        for name, backend in self.backends.items():
            self._tasks.append(asyncio.create_task(self._loop(name, backend.cfg.health_interval_s),
                                                   name=f"health-{name}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _loop(self, name: str, interval: float) -> None:
        while True:
            await self.probe(name)
            await asyncio.sleep(interval)

    def report(self) -> dict[str, object]:
        """The ``/health`` body's backend section (no URLs with credentials, no keys)."""
        now = self.clock()
        out: dict[str, object] = {}
        for name, backend in self.backends.items():
            health = self._latest[name]
            out[name] = {
                "state": health.state,
                "detail": health.detail,
                "kind": backend.kind,
                "model": backend.cfg.model,
                "checked_s_ago": round(now - health.checked_at, 1) if health.checked_at else None,
            }
        return out
