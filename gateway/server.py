"""Serving: start, reload on SIGHUP, shut down on SIGTERM/SIGINT, never dropping a stream silently.

- **Shutdown**: stop accepting connections, give in-flight requests ``server.shutdown_grace_s``,
  end streams still running with an error event (a silent close would look complete to Cline),
  flush the ledger.
- **Reload** (SIGHUP): the config file is loaded and validated first; on error the running
  gateway stays as it is and the problems are logged. Otherwise a new generation of the app
  (backends, routing, accounting) starts on the same port (``SO_REUSEPORT``), and the old one
  stops accepting and drains like a shutdown. Ledger totals and budgets carry over (they live in
  the ledger); in-memory state such as breakers, cooldowns and sticky conversations starts
  afresh, and Prometheus counters restart from zero (a counter reset, which ``rate()`` handles).
  ``listen`` and ``logging`` changes need a restart.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from typing import Awaitable, Callable

import attrs
from aiohttp import web

from config import ConfigError, GatewayConfig, load_config
from gateway.app import create_app
from gateway.keys import STREAMS
from gateway.ledger import LedgerError
from gateway.sse import ActiveStreams
from routing.scorer import ModelFileError

log = logging.getLogger("gateway")


@attrs.define
class Generation:
    cfg: GatewayConfig
    app: web.Application
    runner: web.AppRunner
    site: web.TCPSite


async def start(cfg: GatewayConfig) -> Generation:
    app = create_app(cfg)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                           shutdown_timeout=cfg.server.shutdown_grace_s)
    await runner.setup()
    # Deep accept backlog: a burst of connections must queue, not lose SYNs to a 1 s retransmit.
    # reuse_port: a reloaded generation binds the same port while the old one drains.
    site = web.TCPSite(runner, cfg.listen.host, cfg.listen.port, backlog=1024, reuse_port=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return Generation(cfg, app, runner, site)


async def retire(gen: Generation, why: str) -> None:
    """Stop accepting, let requests finish within the grace period, end the rest, clean up."""
    await gen.site.stop()
    await drain(gen.app[STREAMS], gen.cfg.server.shutdown_grace_s, why)
    await gen.runner.cleanup()


async def drain(streams: ActiveStreams, grace: float, why: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while len(streams) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    if len(streams):
        log.warning("grace period over: ending %d stream(s) with an error event", len(streams))
        streams.abort_all(f"{why}; retry the request")
        for _ in range(100):
            if not len(streams):
                break
            await asyncio.sleep(0.02)


def reloaded(path: str | os.PathLike | None, running: GatewayConfig) -> GatewayConfig | None:
    """The new config, or None (errors logged) if it must not replace the running one."""
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        log.error("reload refused, keeping the running config: %s", exc)
        return None
    # Listening where we already listen is what a reload can do; moving needs a restart.
    if (cfg.listen.host, cfg.listen.port) != (running.listen.host, running.listen.port):
        log.warning("reload: listen changes need a restart; still listening on %s:%s",
                    running.listen.host, running.listen.port)
    return attrs.evolve(cfg, listen=running.listen, logging=running.logging)


async def serve(cfg: GatewayConfig, path: str | os.PathLike | None = None,
                ready: Callable[[str], Awaitable[None]] | None = None) -> None:
    """Serve until SIGTERM/SIGINT; SIGHUP reloads ``path``."""
    loop = asyncio.get_running_loop()
    stop, reload = asyncio.Event(), asyncio.Event()
    signals = {signal.SIGTERM: stop.set, signal.SIGINT: stop.set, signal.SIGHUP: reload.set}
    current = await start(cfg)
    # Everything built so far lives as long as the process: tiktoken's ~100k-entry BPE tables
    # above all. Frozen, the cyclic GC stops walking them, so its pauses (felt at p99) stay short.
    gc.freeze()
    retiring: set[asyncio.Task[None]] = set()
    for sig, handler in signals.items():
        loop.add_signal_handler(sig, handler)
    try:
        url = f"http://{cfg.listen.host}:{cfg.listen.port}"
        log.info("glm-token-saver listening on %s (%s)", url,
                 "; ".join(f"{name}={describe(cfg, name)}" for name in cfg.backends))
        if ready is not None:
            await ready(url)
        while not stop.is_set():
            waiters = [asyncio.ensure_future(e.wait()) for e in (stop, reload)]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            if reload.is_set() and not stop.is_set():
                reload.clear()
                current = await _swap(current, path, retiring)
        log.info("shutting down: finishing in-flight requests (grace %ss)", current.cfg.server.shutdown_grace_s)
        await retire(current, "the gateway is shutting down")
        if retiring:
            await asyncio.gather(*retiring)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


async def _swap(current: Generation, path: str | os.PathLike | None, retiring: set[asyncio.Task[None]]) -> Generation:
    cfg = reloaded(path, current.cfg)
    if cfg is None:
        return current
    try:
        new = await start(cfg)
    except (LedgerError, ModelFileError, OSError) as exc:
        log.error("reload failed to start, keeping the running gateway: %s", exc)
        return current
    log.info("reloaded the config; the previous generation drains (grace %ss)", current.cfg.server.shutdown_grace_s)
    task = asyncio.ensure_future(retire(current, "the gateway reloaded its config"))
    retiring.add(task)
    task.add_done_callback(retiring.discard)
    return new


def describe(cfg: GatewayConfig, name: str) -> str:
    b = cfg.backend(name)
    return f"{b.tier} {b.kind} {b.base_url} model {b.model}" if b.enabled else "disabled"
