"""The floor: the least any aiohttp relay can add, for the benchmark to compare against.

    python -m tests.bench.floor PORT UPSTREAM_URL

It forwards the request body and relays the response bytes as they arrive: no validation,
routing, parsing, watchdog, failover or accounting. Same library and machine as the gateway,
so the difference between the two is what the gateway's own work costs.
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import ClientSession, TCPConnector, web


async def main(port: int, upstream: str) -> None:
    session = ClientSession(connector=TCPConnector(limit=0))

    async def relay(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with session.post(upstream, data=body, headers={"Content-Type": "application/json"}) as up:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            async for piece in up.content.iter_any():
                await resp.write(piece)
            await resp.write_eof()
            return resp

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", relay)
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
