"""Soak: many concurrent streaming clients for a long time, with random upstream faults.

    python -m tests.bench.soak [--streams 200] [--minutes 10] [--warmup-minutes 2]

The gateway runs as its own process; both simulators inject random faults (stalls, cuts,
malformed events, 429s, 503s, resets before headers). Reported: requests served, failovers,
errors by kind (only requests where both backends failed may error), RSS over time, and the
gateway's asyncio tasks and sockets once the load stops (they must return to idle).

RSS growth is judged after a warm-up under the same load: the gateway's bounded caches (token
counts of 20k messages, 10k sticky conversations, SQLite's page cache) fill in the first minutes
(every soak request is a new conversation), and that is their design size, not a leak. Growth
from the very first sample is printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

from backends.sim import CerebrasSim, Fault, LlamaCppSim, Script
from tests.bench.suite import rss_kb
from tests.test_cli import env_with, free_port

ANSWER = Script(content=" ".join(f"w{i}" for i in range(60)))
PROMPTS = ["Fix the typo in the readme", "Refactor the scheduler architecture and debug the race condition",
           "Rename the variable", "Explain this line"]


def faults(rng: random.Random, cloud: bool) -> list[Fault | None]:
    """Mostly healthy requests; the rest each get one named fault. Only the cloud answers 429:
    llama-server queues requests instead (protocols §2.10)."""
    bad = [Fault.stall_after(rng.randint(1, 40), 3.0), Fault.cut_after(rng.randint(1, 40)),
           Fault.malformed_after(rng.randint(1, 40)), Fault.http_error(503), Fault.reset_before_headers(),
           Fault.slow_first_token(4.0)]
    if cloud:
        bad.append(Fault.http_error(429, retry_after=0.5))
    return [None] * 60 + bad


async def feed(sim, rng: random.Random, stop: asyncio.Event, cloud: bool) -> None:
    while not stop.is_set():
        if sim.queued_faults() < 200:
            batch = faults(rng, cloud)
            sim.push_faults(*rng.sample(batch, k=len(batch)))
        await asyncio.sleep(0.2)


def sockets(pid: int) -> int:
    return sum(1 for fd in os.listdir(f"/proc/{pid}/fd")
               if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"))


async def client(http, url: str, rng: random.Random, stop: asyncio.Event, tally: collections.Counter) -> None:
    while not stop.is_set():
        body = {"model": "glm-4.7", "stream": True,
                "messages": [{"role": "user", "content": f"{rng.choice(PROMPTS)} #{rng.random()}"}]}
        try:
            async with http.post(url, json=body) as resp:
                if resp.status != 200:
                    tally[f"http {resp.status}"] += 1
                    await resp.read()
                    await asyncio.sleep(0.5)
                    continue
                last = b""
                async for line in resp.content:
                    if line.startswith(b"data: "):
                        last = line[6:].strip()
                if last == b"[DONE]":
                    tally["ok"] += 1
                elif last.startswith(b"{"):
                    tally["error event: " + orjson.loads(last)["error"]["message"][:60]] += 1
                else:
                    tally["truncated without error"] += 1
        except aiohttp.ClientError as exc:
            tally[f"client error {type(exc).__name__}"] += 1


async def main(streams: int, minutes: float, warmup_minutes: float) -> None:
    rng = random.Random(11)
    local = LlamaCppSim(ANSWER, tokens_per_s=50, n_slots=1024)
    cloud = CerebrasSim(ANSWER, tokens_per_s=200, rate_limit_tokens_per_minute=10**9)
    await local.start()
    await cloud.start()
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="glm-soak-"))
    (work / "gw.yaml").write_text(f"""
listen: {{port: {port}}}
backends:
  local: {{base_url: "{local.url}", first_token_timeout_s: 2, stall_timeout_s: 1}}
  cloud: {{base_url: "{cloud.url}", api_key: soak, first_token_timeout_s: 2, stall_timeout_s: 1}}
routing: {{backoff_base_s: 0.05, breaker_open_s: 2}}
limits: {{max_streams: 1000, max_streams_per_key: 1000, requests_per_minute_per_key: 1000000}}
logging: {{file: "", level: warning}}
ledger: {{path: "{work / 'ledger.sqlite3'}"}}
""")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "serve", "--config", str(work / "gw.yaml"), env=env_with())
    url = f"http://127.0.0.1:{port}"
    stop = asyncio.Event()
    tally: collections.Counter[str] = collections.Counter()
    rss: list[tuple[float, int]] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        for _ in range(100):
            try:
                async with http.get(url + "/health") as resp:
                    if resp.status == 200:
                        break
            except OSError:
                await asyncio.sleep(0.1)
        idle = await (await http.get(url + "/health")).json()
        base_sockets = sockets(proc.pid)
        feeders = [asyncio.ensure_future(feed(local, rng, stop, cloud=False)),
                   asyncio.ensure_future(feed(cloud, rng, stop, cloud=True))]
        clients = [asyncio.ensure_future(client(http, url + "/v1/chat/completions", rng, stop, tally))
                   for _ in range(streams)]
        started = time.monotonic()
        warm_at = warmup_minutes * 60
        while time.monotonic() - started < warm_at + minutes * 60:
            await asyncio.sleep(min(10.0, minutes * 60 / 6))
            rss.append((time.monotonic() - started, rss_kb(proc.pid)))
            print(f"t={rss[-1][0]:5.0f}s rss={rss[-1][1] / 1024:.1f} MB served={tally['ok']}", flush=True)
        stop.set()
        await asyncio.gather(*clients, *feeders)
        # Idle pooled upstream sockets close after the 15 s keep-alive, by a cleanup that runs
        # on that period: allow two periods before calling anything left over a leak.
        settled = time.monotonic()
        while sockets(proc.pid) > base_sockets and time.monotonic() - settled < 40:
            await asyncio.sleep(1)
        settle_s = time.monotonic() - settled
        after = await (await http.get(url + "/health")).json()
        stats = await (await http.get(url + "/stats")).json()
        end_sockets = sockets(proc.pid)
    proc.terminate()
    await proc.wait()
    await local.stop()
    await cloud.stop()
    first = rss[0][1] if rss else 0
    growth = 100 * (rss[-1][1] - first) / first if first else 0.0
    warm = next((r for t, r in rss if t >= warm_at), first)  # the bounded caches are full by now
    warm_growth = 100 * (rss[-1][1] - warm) / warm if warm else 0.0
    total = sum(tally.values())
    print(f"\n# soak: {streams} concurrent streams for {minutes:g} min after a {warmup_minutes:g}-min warm-up, "
          "random faults on both backends")
    print(f"requests {total}: " + ", ".join(f"{k} {v}" for k, v in tally.most_common()))
    print(f"failovers {stats['since_start']['failovers']}; route reasons {stats['since_start']['route_reasons']}")
    print(f"RSS MB every {rss[0][0]:.0f} s: {[round(r / 1024, 1) for _, r in rss]}")
    print(f"RSS growth over the {minutes:g} min after warm-up {warm_growth:+.1f}% ({warm / 1024:.1f} -> "
          f"{rss[-1][1] / 1024:.1f} MB); from the first sample {growth:+.1f}%")
    print(f"idle before: tasks {idle['runtime']['tasks']}, sockets {base_sockets}; "
          f"after: tasks {after['runtime']['tasks']} {after['runtime']['tasks_by_kind']}, "
          f"streams {after['runtime']['streams']}, sockets {end_sockets} ({settle_s:.0f} s after the load stopped)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--warmup-minutes", type=float, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.streams, args.minutes, args.warmup_minutes))
