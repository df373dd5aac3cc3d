"""Keep-alive pings: one ticker for every open stream writes the front's ping to a stream that
has been quiet, never to one that is writing, and a ping never lands inside an event."""

from __future__ import annotations

import orjson

from backends.sim import Fault, Script
from tests.conftest import sse_blocks, user


async def wire_order(resp) -> list[str]:
    """The stream as it arrived, in order: "ping" for a comment, the text of a delta,
    "[DONE]" for the end (a ping inside an event would fail the parse)."""
    order: list[str] = []
    async for block in sse_blocks(resp):
        if block.startswith(b":"):
            order.append("ping")
        elif block == b"data: [DONE]":
            order.append("[DONE]")
        else:
            assert block.startswith(b"data: ") and b"\n" not in block, block
            choices = orjson.loads(block[6:]).get("choices") or [{}]
            delta = choices[0].get("delta") or {}
            text = delta.get("content") or delta.get("reasoning_content")
            if text:
                order.append(text)
    return order


async def test_a_quiet_stream_is_pinged_and_a_busy_one_is_not(http, gateway_factory, local_sim):
    server = await gateway_factory(server={"keepalive_s": 0.1}, local={"stall_timeout_s": 5})
    body = {"model": "glm-4.7-local", "stream": True, "messages": user()}

    # The model pauses 0.6 s after three tokens of its reasoning (shorter than the stall
    # timeout: no failover).
    local_sim.push_faults(Fault.stall_after(3, 0.6))
    async with http.post(server.make_url("/v1/chat/completions"), json=body) as resp:
        assert resp.status == 200 and resp.headers["x-glm-backend"] == "local"
        order = await wire_order(resp)
    words = [w for w in order if w not in ("ping", "[DONE]")]
    script = local_sim.script
    assert "".join(words) == script.reasoning + script.content and order[-1] == "[DONE]"
    # Silent for at most keepalive_s: the 0.6 s pause holds at least 4 pings, all in the pause.
    pings = [i for i, w in enumerate(order) if w == "ping"]
    assert len(pings) >= 4
    assert order[pings[0] - 1] == words[2] and order[pings[-1] + 1] == words[3]
    assert pings == list(range(pings[0], pings[-1] + 1))

    # A model writing a token every 2.5 ms for about a second is never pinged.
    local_sim.script = Script(content="tick " * 400)
    async with http.post(server.make_url("/v1/chat/completions"), json=body) as resp:
        order = await wire_order(resp)
    assert "".join(w for w in order if w not in ("ping", "[DONE]")) == "tick " * 400
    assert "ping" not in order
