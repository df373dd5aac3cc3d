"""Failover switch time: what the gateway adds when it moves a stalled stream to the cloud.

    python -m tests.bench.failover [--runs 50]

Local stalls after 20 tokens; the watchdog (``stall_timeout_s``) detects it and the cloud
continues the answer. Measured at the client:

    switch = (first continued token - last local token) - stall_timeout_s - cloud TTFT

where the cloud's own time to first token is measured in the same run by sending the same
continuation request straight to the cloud simulator. What remains is the gateway's work:
detecting the stall, closing local, building the continuation and relaying the first byte.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import time

import aiohttp
import orjson
from aiohttp.test_utils import TestServer

from backends.sim import CerebrasSim, Fault, LlamaCppSim, Script
from gateway.app import create_app
from routing import TokenCounter
from tests.conftest import make_config

ANSWER = " ".join(f"word{i}" for i in range(60))
STALL = 0.2


async def sse_times(resp: aiohttp.ClientResponse) -> list[tuple[float, str]]:
    """(arrival time, content) for every content delta."""
    out, buf = [], b""
    async for piece in resp.content.iter_any():
        now = time.perf_counter()
        buf += piece
        while b"\n\n" in buf:
            block, buf = buf.split(b"\n\n", 1)
            if block.startswith(b"data: {"):
                data = orjson.loads(block[6:])
                choices = data.get("choices") or [{}]
                content = (choices[0].get("delta") or {}).get("content")
                if content:
                    out.append((now, content))
    return out


async def main(runs: int) -> None:
    local = LlamaCppSim(Script(content=ANSWER), tokens_per_s=200)
    cloud = CerebrasSim(Script(content=ANSWER), tokens_per_s=None)
    await local.start()
    await cloud.start()
    watch = {"first_token_timeout_s": 5.0, "stall_timeout_s": STALL}
    # Every run must start on local again: not sticky to the cloud that finished the last one,
    # and no circuit breaker opening on local after its repeated stalls.
    cfg = make_config(local.url, cloud.url, local=watch, cloud={**watch, "api_key": ""},
                      routing={"sticky": False, "breaker_failures": 10**6})
    server = TestServer(create_app(cfg, token_counter=TokenCounter.default()))
    await server.start_server()
    body = {"model": "glm-4.7", "stream": True, "messages": [{"role": "user", "content": "list words"}]}
    switch, cloud_ttft = [], []
    async with aiohttp.ClientSession() as http:
        for _ in range(runs):
            local.default_fault = Fault.stall_after(20)
            async with http.post(server.make_url("/v1/chat/completions"), json=body) as resp:
                times = await sse_times(resp)
            assert "".join(c for _, c in times) == ANSWER, "the answer did not survive the failover"
            # The switch is the one long gap in the stream (local's stall, then the cloud).
            gap = max(range(1, len(times)), key=lambda i: times[i][0] - times[i - 1][0])
            last_local, first_cloud = times[gap - 1][0], times[gap][0]
            # The cloud's own TTFT for the very request the gateway sent it.
            continuation = cloud.requests[-1].body
            t = time.perf_counter()
            async with http.post(cloud.url + "/chat/completions", json=continuation) as direct:
                await direct.content.readuntil(b'"content"')
                ttft = time.perf_counter() - t
                await direct.read()
            cloud_ttft.append(ttft)
            switch.append(first_cloud - last_local - STALL - ttft)
    await server.close()
    await local.stop()
    await cloud.stop()
    ms = sorted(1000 * x for x in switch)
    print(f"# failover switch time ({platform.machine()}, Python {platform.python_version()}, {runs} runs, "
          f"stall_timeout_s={STALL})")
    print(f"gateway-added switch time: p50 {statistics.median(ms):.2f} ms, p99 {ms[int(0.99 * (len(ms) - 1))]:.2f} ms; "
          f"cloud's own TTFT p50 {1000 * statistics.median(cloud_ttft):.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    asyncio.run(main(parser.parse_args().runs))
