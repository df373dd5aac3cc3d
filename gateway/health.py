"""Background health probes: one loop per enabled backend, results fed to routing's states.

When a backend comes up, its real context window is asked for too (llama.cpp's ``/props``),
so routing checks context fit against what the server holds, not only what config says.

    monitor = HealthMonitor(backends, router.states)
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
from routing.state import BackendStates

log = logging.getLogger("gateway.health")


class HealthMonitor:
    def __init__(self, backends: Mapping[str, Backend], states: BackendStates,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.backends = backends
        self.states = states
        self.clock = clock
        self._latest: dict[str, Health] = {name: Health("unknown") for name in backends}
        self._tasks: list[asyncio.Task[None]] = []

    def snapshot(self) -> dict[str, Health]:
        return dict(self._latest)

    async def probe(self, name: str) -> Health:
        backend = self.backends[name]
        health = await backend.health()
        previous = self._latest.get(name)
        if previous is None or previous.state != health.state:
            log.info("backend %s is %s%s", name, health.state,
                     f" ({health.detail})" if health.detail else "")
            if health.ok:
                # A (re)started llama-server may have a different -c / -np than config says.
                n_ctx = await backend.context_limit()
                if n_ctx:
                    self.states.context[name] = n_ctx
        self._latest[name] = health
        self.states.observe_health(name, health.state, self.clock())
        if health.ok:
            slots = await backend.slots()
            if slots is not None:
                self.states.observe_slots(name, *slots, self.clock())
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
                "tier": backend.cfg.tier,
                "model": backend.cfg.model,
                "checked_s_ago": round(now - health.checked_at, 1) if health.checked_at else None,
            }
        return out
