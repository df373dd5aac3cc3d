"""Shared fixtures: real simulators on loopback, the real gateway app, the official openai client."""

from __future__ import annotations

from typing import Any, AsyncIterator

import attrs
import openai
import orjson
import pytest
from aiohttp import ClientSession

from backends.sim import CerebrasSim, LlamaCppSim, Script
from config import GatewayConfig
from gateway.app import create_app
from routing import TokenCounter

CLOUD_KEY = "csk-test-secret-key-0123456789"
LOCAL_SCRIPT = Script(content="The local model says hello, step by step.",
                      reasoning="Thinking locally about it.")
CLOUD_SCRIPT = Script(content="The cloud model answers quickly and precisely.",
                      reasoning="Reasoning on Cerebras first.")


def make_config(local_url: str, cloud_url: str, **sections: dict[str, Any]) -> GatewayConfig:
    """A config pointing at the simulators; ``sections`` evolve top-level sections."""
    cfg = GatewayConfig()
    backends = {
        "local": attrs.evolve(cfg.backends["local"], **{"base_url": local_url, "health_interval_s": 0.2,
                                                        **sections.pop("local", {})}),
        "cloud": attrs.evolve(cfg.backends["cloud"], **{"base_url": cloud_url, "api_key": CLOUD_KEY,
                                                        "health_interval_s": 0.2, **sections.pop("cloud", {})}),
    }
    # In-memory ledger unless a test asks for a file (persistence tests do). Tests of routing
    # mechanics (fallback, failover, accounting) use the keyword classifier, so retraining the
    # learned scorer can never change what they test; tests/test_scorer.py and
    # tests/test_escalation.py cover the learned scorer end to end.
    routing = attrs.evolve(cfg.routing, classifier=attrs.evolve(cfg.routing.classifier, method="keywords"))
    cfg = attrs.evolve(cfg, backends=backends, routing=routing, ledger=attrs.evolve(cfg.ledger, path=":memory:"))
    for name, values in sections.items():
        cfg = attrs.evolve(cfg, **{name: attrs.evolve(getattr(cfg, name), **values)})
    return cfg


@pytest.fixture
async def local_sim() -> AsyncIterator[LlamaCppSim]:
    sim = LlamaCppSim(LOCAL_SCRIPT, tokens_per_s=400)
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def cloud_sim() -> AsyncIterator[CerebrasSim]:
    sim = CerebrasSim(CLOUD_SCRIPT, tokens_per_s=1000, api_key=CLOUD_KEY)
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture(scope="session")
def token_counter() -> TokenCounter:
    return TokenCounter.default()


@pytest.fixture
def gateway_factory(aiohttp_server, local_sim, cloud_sim, token_counter):
    """Start a gateway on loopback; keyword sections tweak its config. ``clock`` replaces the
    system clock (a ``backends.ManualClock``: waits that take no real time)."""

    async def start(clock: Any = None, **sections: dict[str, Any]):
        cfg = make_config(local_sim.url, cloud_sim.url, **sections)
        return await aiohttp_server(create_app(cfg, token_counter=token_counter, clock=clock))

    return start


@pytest.fixture
async def gateway(gateway_factory):
    return await gateway_factory()


@pytest.fixture
async def client(gateway) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=str(gateway.make_url("/v1")), api_key="unused",
                                  max_retries=0) as c:
        yield c


@pytest.fixture
async def http() -> AsyncIterator[ClientSession]:
    async with ClientSession() as session:
        yield session


def user(text: str = "Say hello") -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def sse_blocks(resp) -> AsyncIterator[bytes]:
    """The blank-line-separated blocks of a raw SSE response, in the order they arrived."""
    buf = b""
    async for piece in resp.content.iter_any():
        buf += piece
        while b"\n\n" in buf:
            block, buf = buf.split(b"\n\n", 1)
            yield block
    assert not buf.strip(), f"unterminated event at end of stream: {buf!r}"


async def read_sse(resp) -> tuple[list[Any], list[bytes]]:
    """All ``data:`` payloads of a raw SSE response (parsed, ``[DONE]`` kept as a string),
    and the comment lines seen."""
    events: list[Any] = []
    comments: list[bytes] = []
    async for block in sse_blocks(resp):
        for line in block.split(b"\n"):
            if line.startswith(b":"):
                comments.append(line)
            elif line.startswith(b"data: "):
                data = line[6:]
                events.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return events, comments
