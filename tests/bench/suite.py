"""Gateway overhead, relay throughput and memory per stream, against a direct connection.

    python -m tests.bench.suite [--quick]

The upstream is the built-in llama.cpp simulator at full speed, so the gateway is what gets
measured. The gateway runs as its own process (``glm-token-saver serve``) pinned to one core;
the simulator and the load generator share the other (``taskset``, when available). Every
figure is measured in the same run against the same simulator, with and without the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from backends.sim import LlamaCppSim, Script
from tests.test_cli import free_port

SHORT = Script(content=" ".join(f"tok{i}" for i in range(20)))
LONG = Script(content=" ".join(f"tok{i}" for i in range(400)))


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def one_stream(http: aiohttp.ClientSession, url: str, body: dict) -> tuple[float, float, int]:
    """(time to first data event, total time, data events) of one streamed request."""
    started = time.perf_counter()
    first, events = None, 0
    async with http.post(url, json=body) as resp:
        if resp.status != 200:  # a refused request would look fast: the run is void
            raise RuntimeError(f"{url} answered {resp.status}: {(await resp.read())[:200]!r}")
        async for line in resp.content:
            if line.startswith(b"data: "):
                events += 1
                if first is None:
                    first = time.perf_counter() - started
    return first or 0.0, time.perf_counter() - started, events


async def load(http, url: str, body: dict, concurrency: int, per_worker: int) -> list[tuple[float, float, int]]:
    async def worker() -> list[tuple[float, float, int]]:
        return [await one_stream(http, url, body) for _ in range(per_worker)]

    return [r for rs in await asyncio.gather(*(worker() for _ in range(concurrency))) for r in rs]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start_gateway(sim_url: str, port: int, workdir: Path) -> subprocess.Popen:
    config = workdir / "gw.yaml"
    config.write_text(f"""
listen: {{port: {port}}}
backends:
  local: {{base_url: "{sim_url}", first_token_timeout_s: 120, stall_timeout_s: 120, health_interval_s: 60}}
  cloud: {{enabled: false}}
logging: {{file: "", level: info}}
limits: {{max_streams: 100000, max_streams_per_key: 100000, requests_per_minute_per_key: 100000000}}
ledger: {{path: "{workdir / 'ledger.sqlite3'}"}}
server: {{keepalive_s: 60}}
""")
    cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)]
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        cmd = ["taskset", "-c", "1", *cmd]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_litellm(binary: str, sim_url: str, port: int, workdir: Path) -> subprocess.Popen:
    """LiteLLM's proxy, one worker, pointed at the same simulator (the peer to compare with)."""
    config = workdir / "litellm.yaml"
    config.write_text(f"""
model_list:
  - model_name: glm-4.7
    litellm_params: {{model: openai/local-model, api_base: "{sim_url}", api_key: none}}
""")
    cmd = [binary, "--config", str(config), "--port", str(port), "--num_workers", "1"]
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        cmd = ["taskset", "-c", "1", *cmd]
    # It refuses to start without a master key, and fetches its price map online unless told not to.
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_MASTER_KEY": LITELLM_KEY}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


LITELLM_KEY = "sk-bench-master-key"


async def wait_up(http, url: str, path: str = "/health", timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with http.get(url + path, headers={"Authorization": f"Bearer {LITELLM_KEY}"}) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


async def peer(http, litellm: str, sim: LlamaCppSim, body: dict, workdir: Path, quick: bool,
               ours: dict[str, float]) -> list[str]:
    """The same overhead and throughput runs through LiteLLM, as ratios to the gateway's."""
    port = free_port()
    proc = start_litellm(litellm, sim.url, port, workdir)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    rows = []
    try:
        await wait_up(http, f"http://127.0.0.1:{port}", "/health/liveliness", timeout=90)
        auth = {"Authorization": f"Bearer {LITELLM_KEY}"}
        http.headers.update(auth)
        sim.script, sim.tokens_per_s = SHORT, None
        direct = await load(http, sim.url + "/chat/completions", body, 1, 50 if quick else 200)
        via = await load(http, url, body, 1, 50 if quick else 200)
        over = pct([r[1] for r in via], 0.5) - pct([r[1] for r in direct], 0.5)
        rows.append(f"| LiteLLM overhead total, 1 stream | +{1e3 * over:.2f} ms p50 | "
                    f"{over / ours['overhead']:.1f}x the gateway's | |")
        sim.script = LONG
        cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
        results = await load(http, url, body, 64, 1)
        elapsed = time.perf_counter() - t0
        rate = sum(r[2] for r in results) / elapsed
        cpu = (cpu_seconds(proc.pid) - cpu0) / elapsed
        rows.append(f"| LiteLLM throughput, 64 streams | {rate:,.0f} chunks/s (CPU {100 * cpu:.0f}% of one core) | "
                    f"the gateway relays {ours['throughput'] / rate:.1f}x as many | |")
    finally:
        http.headers.pop("Authorization", None)
        proc.terminate()
        proc.wait(timeout=30)
    return rows


async def main(quick: bool, litellm: str | None) -> None:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})  # load generator and simulator on core 0
    sim = LlamaCppSim(SHORT, tokens_per_s=None, n_slots=4096, close_after_stream=False)
    await sim.start()
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="glm-bench-"))
    proc = start_gateway(sim.url, port, workdir)
    gw = f"http://127.0.0.1:{port}"
    body = {"model": "glm-4.7", "stream": True, "messages": [{"role": "user", "content": "fix the typo"}]}
    rows: list[str] = []
    ours: dict[str, float] = {}
    connector = aiohttp.TCPConnector(limit=0)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as http:
            await wait_up(http, gw)
            # 1. Overhead: time to first byte and total, gateway vs direct, same simulator.
            for concurrency, per_worker in ((1, 300 if not quick else 50), (32, 20 if not quick else 5),
                                            (256, 4 if not quick else 2)):
                direct = await load(http, sim.url + "/chat/completions", body, concurrency, per_worker)
                via = await load(http, gw + "/v1/chat/completions", body, concurrency, per_worker)
                if concurrency == 1:
                    ours["overhead"] = pct([r[1] for r in via], 0.5) - pct([r[1] for r in direct], 0.5)
                for name, i in (("TTFB", 0), ("total", 1)):
                    d50, d99 = pct([r[i] for r in direct], 0.5), pct([r[i] for r in direct], 0.99)
                    g50, g99 = pct([r[i] for r in via], 0.5), pct([r[i] for r in via], 0.99)
                    rows.append(f"| overhead {name}, {concurrency} stream(s) | direct p50 {1e3 * d50:.2f} / p99 "
                                f"{1e3 * d99:.2f} ms | gateway p50 {1e3 * g50:.2f} / p99 {1e3 * g99:.2f} ms | "
                                f"+{1e3 * (g50 - d50):.2f} / +{1e3 * (g99 - d99):.2f} ms |")
            # 2. Relay throughput: chunks per second at high concurrency, and the gateway's CPU.
            sim.script = LONG
            for name, url in (("direct", sim.url + "/chat/completions"), ("gateway", gw + "/v1/chat/completions")):
                cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
                results = await load(http, url, body, 64, 1 if quick else 3)
                elapsed = time.perf_counter() - t0
                cpu = (cpu_seconds(proc.pid) - cpu0) / elapsed
                chunks = sum(r[2] for r in results)
                ours["throughput"] = chunks / elapsed
                rows.append(f"| throughput {name}, 64 streams x {len(results) // 64} | {chunks / elapsed:,.0f} "
                            f"chunks/s | gateway CPU {100 * cpu:.0f}% of one core | |")
            # 3. Memory: RSS idle, then with many slowly dripping streams open.
            idle = rss_kb(proc.pid)
            rows.append(f"| gateway RSS idle | {idle / 1024:.1f} MB | | |")
            sim.script, sim.tokens_per_s = LONG, 0.5
            for n in ((100, 500) if quick else (100, 500, 1000)):
                tasks = [asyncio.ensure_future(one_stream(http, gw + "/v1/chat/completions", body)) for _ in range(n)]
                for _ in range(400):
                    await asyncio.sleep(0.05)
                    if sim.live_requests() >= n:
                        break
                await asyncio.sleep(1.0)
                held = rss_kb(proc.pid)
                rows.append(f"| RSS with {n} open streams | {held / 1024:.1f} MB | "
                            f"{(held - idle) / n:.1f} KB per stream | |")
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await asyncio.sleep(0.5)
            # 4. The peer, optional: LiteLLM's proxy against the same simulator, same run.
            if litellm:
                rows += await peer(http, litellm, sim, body, workdir, quick, ours)
            else:
                rows.append("| LiteLLM | not run (pass --litellm PATH/TO/litellm) | | |")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        await sim.stop()
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"aiohttp {aiohttp.__version__}; gateway pinned to core 1, client+simulator to core 0")
    print("| measure | direct / value | gateway | gateway minus direct (p50 / p99) |")
    print("|---|---|---|---|")
    print("\n".join(rows))
    print("routing decision and failover switch times: python -m tests.bench.routing / tests.bench.failover")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer requests, for a smoke run")
    parser.add_argument("--litellm", help="path to the litellm proxy command, in its own venv")
    args = parser.parse_args()
    asyncio.run(main(args.quick, args.litellm))
