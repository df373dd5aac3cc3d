"""The harness of the routing-quality bench (:mod:`tests.bench.routing_quality`): its constants,
the gateway config (the defaults with the backends on the simulators), the real gateway app
served on loopback with the official ``openai`` and ``anthropic`` clients, one request through
either client with its route read from the response headers (:class:`Answer`), a bounded
``gather``, and the gateway-log tally. Both parts use it: :mod:`tests.bench.routing_quality_tasks`
and :mod:`tests.bench.routing_quality_replay`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import anthropic
import attrs
import openai
from aiohttp import web

from backends.sim import Script
from config import GatewayConfig
from gateway.app import create_app
from routing import TokenCounter

CLOUD_KEY = "csk-bench-routing-quality-0123456789"
LOCAL_SCRIPT = Script(content="I will read the file first.")
CLOUD_SCRIPT = Script(content="Reading the configuration now.")
MAX_TOKENS = 32
MODEL = "glm-4.7"
SHAPES = ("classic", "cli", "claude")
SHAPE_NAMES = {"classic": "classic Cline", "cli": "Cline CLI", "claude": "Claude Code"}


# --- harness ---------------------------------------------------------------------------------------
class Forgetful(list):
    """The simulators' request log, which only tests read: here it would only grow the heap."""

    def append(self, item: object) -> None:
        pass


class LogTally(logging.Handler):
    """Counts the gateway's warnings and errors (and keeps the first few), so they are reported
    in the summary instead of scrolling past on stderr."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: collections.Counter[str] = collections.Counter()
        self.first: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        key = f"{record.levelname} {record.name}"
        self.counts[key] += 1
        if key not in self.first:
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                text += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
            self.first[key] = text[:300]


def make_config(local_url: str, cloud_url: str, ledger: Path, *, method: str | None = None,
                strategy: str | None = None) -> GatewayConfig:
    cfg = GatewayConfig()
    backends = {**cfg.backends,  # a mapping of named backends (config.backends)
                "local": attrs.evolve(cfg.backends["local"], base_url=local_url),
                "cloud": attrs.evolve(cfg.backends["cloud"], base_url=cloud_url, api_key=CLOUD_KEY)}
    routing = cfg.routing
    if method is not None:
        routing = attrs.evolve(routing, classifier=attrs.evolve(routing.classifier, method=method))
    if strategy is not None:
        routing = attrs.evolve(routing, strategy=strategy)
    return attrs.evolve(
        cfg, backends=backends, routing=routing,
        # Not routing: one client sends thousands of requests a minute here.
        limits=attrs.evolve(cfg.limits, requests_per_minute_per_key=10**9),
        ledger=attrs.evolve(cfg.ledger, path=str(ledger)),
        logging=attrs.evolve(cfg.logging, file=""))


@attrs.define
class Gateway:
    base: str
    client: openai.AsyncOpenAI
    http: aiohttp.ClientSession
    claude: anthropic.AsyncAnthropic

    async def stats(self) -> dict[str, Any]:
        """``GET /stats``'s ``since_start`` window, or zeros if the gateway cannot say (reported, not fatal)."""
        try:
            async with self.http.get(self.base + "/stats") as resp:
                window = (await resp.json()).get("since_start") or {}
        except (aiohttp.ClientError, ValueError) as exc:
            print(f"!! GET /stats failed: {exc}")
            window = {}
        cloud = (window.get("backends") or {}).get("cloud") or {}
        return {"savings_usd": 0.0, "all_cloud_cost_usd": 0.0, "savings_pct": 0.0, "requests": 0,
                "requests_by_backend": {}, "statuses": {}, **window,
                "cloud": {"cost_usd": cloud.get("cost_usd", 0.0),
                          "tokens": cloud.get("tokens") or {"prompt": 0, "completion": 0}}}


@contextlib.asynccontextmanager
async def running_gateway(cfg: GatewayConfig, counter: TokenCounter) -> AsyncIterator[Gateway]:
    runner = web.AppRunner(create_app(cfg, token_counter=counter), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    client = openai.AsyncOpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=60.0)
    messages_client = anthropic.AsyncAnthropic(base_url=base, api_key="unused", max_retries=0, timeout=60.0)
    try:
        async with aiohttp.ClientSession() as http:
            yield Gateway(base, client, http, messages_client)
    finally:
        await client.close()
        await messages_client.close()
        await runner.cleanup()


@attrs.define
class Answer:
    status: int  # 0: no HTTP answer at all
    backend: str | None = None
    reason: str | None = None
    content: str | None = None
    error: str | None = None
    should_retry: str | None = None

    @property
    def cloud(self) -> bool:
        return self.backend == "cloud"


async def send(gw: Gateway, body: dict[str, Any]) -> Answer:
    """One non-streaming request with the official client; the route from the headers."""
    kwargs: dict[str, Any] = {"model": body.get("model", MODEL), "messages": body["messages"], "max_tokens": MAX_TOKENS}
    if body.get("tools"):
        kwargs["tools"] = body["tools"]
        kwargs["tool_choice"] = body.get("tool_choice", "auto")
    try:
        raw = await gw.client.chat.completions.with_raw_response.create(**kwargs)
    except openai.APIStatusError as exc:
        h = exc.response.headers
        error = exc.body if isinstance(exc.body, dict) else {"message": exc.message}
        text = json.dumps({k: error.get(k) for k in ("message", "type", "code") if k in error})
        return Answer(exc.status_code, h.get("x-glm-backend"), h.get("x-glm-route-reason"),
                      error=text[:400], should_retry=h.get("x-should-retry"))
    except openai.APIError as exc:
        return Answer(0, error=f"{type(exc).__name__}: {exc}"[:300])
    completion = raw.parse()
    content = completion.choices[0].message.content if completion.choices else None
    return Answer(200, raw.headers.get("x-glm-backend"), raw.headers.get("x-glm-route-reason"), content)


async def send_messages(gw: Gateway, body: dict[str, Any]) -> Answer:
    """The same through ``POST /v1/messages`` with the official ``anthropic`` client (Claude Code's shape)."""
    body = dict(body)
    # Claude Code sends temperature (1 on the main loop, 0 on haiku's); this SDK has no argument for it.
    extra = {k: body.pop(k) for k in ("temperature",) if k in body}
    try:
        raw = await gw.claude.messages.with_raw_response.create(**body, extra_body=extra or None)
    except anthropic.APIStatusError as exc:
        h = exc.response.headers
        error = (exc.body or {}).get("error") if isinstance(exc.body, dict) else None
        text = json.dumps(error or {"message": exc.message})
        return Answer(exc.status_code, h.get("x-glm-backend"), h.get("x-glm-route-reason"), error=text[:400],
                      should_retry=h.get("x-should-retry"))
    except anthropic.APIError as exc:
        return Answer(0, error=f"{type(exc).__name__}: {exc}"[:300])
    message = await raw.parse()
    content = next((b.text for b in message.content if b.type == "text"), None)
    return Answer(200, raw.headers.get("x-glm-backend"), raw.headers.get("x-glm-route-reason"), content)


def sender(shape: str) -> Any:
    return send_messages if shape == "claude" else send


async def bounded(n: int, jobs: list[Any]) -> list[Any]:
    """Run coroutines with at most ``n`` in flight, results in order."""
    gate = asyncio.Semaphore(n)

    async def one(job: Any) -> Any:
        async with gate:
            return await job

    return await asyncio.gather(*(one(j) for j in jobs))


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def share(a: int, b: int) -> float:
    return a / b if b else 0.0
