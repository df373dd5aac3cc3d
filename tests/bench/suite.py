"""Gateway overhead, relay throughput and memory per stream, against a direct connection.

    python -m tests.bench.suite [--quick] [--litellm PATH]

The upstreams are the built-in simulators at full speed (llama.cpp for the local path, Cerebras
for the cloud path), so the gateway is what gets measured. The gateway runs as its own process
(``glm-token-saver serve``) pinned to one core; the simulators and the load generator share the
other (``taskset``, when available). Every figure is measured in the same run against the same
simulator: direct, through the gateway, through a bare aiohttp relay (``tests/bench/floor.py``,
the least any aiohttp gateway adds here) and, optionally, through LiteLLM's proxy.

The local path pays one TCP connect per request on every side, as against a real llama-server:
it closes the connection after every streamed response although it sent ``Keep-Alive``
(``../shared/protocols.md`` §8), so the gateway's llama.cpp backend uses ``force_close``. The
simulator runs with that quirk (``close_after_stream=True``), and the direct client and the
floor relay open a fresh connection per request too; a pooled direct client would skip the
connect every real local request pays, and flatter the baseline. The cloud path (Cerebras keeps
connections alive) stays pooled on every side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import aiohttp

from backends.sim import CerebrasSim, LlamaCppSim, Script
from tests.test_cli import free_port

SHORT = Script(content=" ".join(f"tok{i}" for i in range(20)))
LONG = Script(content=" ".join(f"tok{i}" for i in range(400)))


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


@dataclass(frozen=True)
class Target:
    """Where one side of a measurement sends its requests, and over which client session."""
    http: aiohttp.ClientSession
    url: str
    body: dict
    headers: dict[str, str] | None = None
    expect: str | None = None  # the backend the gateway must name in x-glm-backend


# Per expected backend, the backends the gateway's responses named: an old gateway could fall
# back to the cloud when a pooled socket to llama-server died, and a cloud answer timed as a
# local one would skew the local path's figures. Requests sent per URL, to check the cloud
# simulator's own count against.
SERVED: defaultdict[str, Counter[str]] = defaultdict(Counter)
SENT: Counter[str] = Counter()
PHASES: list[str] = []  # local-path requests not served locally, phase by phase


def phase_done(name: str, _seen: list[Counter[str]] = [Counter()]) -> None:  # noqa: B006 (the last mark)
    now = Counter(SERVED["local"])
    since = now - _seen[0]
    _seen[0] = now
    PHASES.append(f"{name} {since.total() - since['local']}/{since.total()}")


async def one_stream(t: Target) -> tuple[float, float, int]:
    """(time to first data event, total time, data events) of one streamed request."""
    started = time.perf_counter()
    first, events = None, 0
    SENT[t.url] += 1
    async with t.http.post(t.url, json=t.body, headers=t.headers) as resp:
        if resp.status != 200:  # a refused request would look fast: the run is void
            raise RuntimeError(f"{t.url} answered {resp.status}: {(await resp.read())[:200]!r}")
        if t.expect:
            SERVED[t.expect][resp.headers.get("x-glm-backend", "none")] += 1
        async for line in resp.content:
            if line.startswith(b"data: "):
                events += 1
                if first is None:
                    first = time.perf_counter() - started
    return first or 0.0, time.perf_counter() - started, events


@contextlib.contextmanager
def quiet_gc() -> Iterator[None]:
    """The load generator's own cyclic GC stays out of the figures: a full pass over a big heap
    pauses every stream in flight at once, and shows up as a p99 of the side measured then."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def load(t: Target, concurrency: int, per_worker: int) -> list[tuple[float, float, int]]:
    async def worker() -> list[tuple[float, float, int]]:
        return [await one_stream(t) for _ in range(per_worker)]

    with quiet_gc():
        return [r for rs in await asyncio.gather(*(worker() for _ in range(concurrency))) for r in rs]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start_gateway(sim_url: str, cloud_url: str, port: int, workdir: Path,
                  version: Path | None = None) -> subprocess.Popen:
    """``version``: another checkout's gateway (``tests.bench.versions``); default this one."""
    config = workdir / f"gw-{port}.yaml"
    config.write_text(f"""
listen: {{port: {port}}}
backends:
  local: {{base_url: "{sim_url}", first_token_timeout_s: 120, stall_timeout_s: 120, health_interval_s: 60}}
  cloud: {{base_url: "{cloud_url}", api_key: "{CLOUD_KEY}", first_token_timeout_s: 120, stall_timeout_s: 120,
          health_interval_s: 60}}
logging: {{file: "", level: info}}
limits: {{max_streams: 100000, max_streams_per_key: 100000, requests_per_minute_per_key: 100000000}}
ledger: {{path: "{workdir / 'ledger.sqlite3'}"}}
server: {{keepalive_s: 60}}
""")
    return start_pinned([sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)], root=version)


def start_floor(port: int, upstream: str) -> subprocess.Popen:
    """The floor relay, with a fresh connection per request to the simulator: the gateway's
    llama.cpp backend uses ``force_close`` (real llama-server closes after every stream,
    protocols.md §8), and a pooled floor would also hand requests dead sockets."""
    code = ("import functools, runpy, aiohttp; "
            "aiohttp.TCPConnector = functools.partial(aiohttp.TCPConnector, force_close=True); "
            "runpy.run_module('tests.bench.floor', run_name='__main__')")
    return start_pinned([sys.executable, "-c", code, str(port), upstream])


def start_pinned(cmd: list[str], env: dict[str, str] | None = None, root: Path | None = None) -> subprocess.Popen:
    """A server process on core 1 (the load generator and the simulators run on core 0), running
    the code of ``root`` (a checkout; default this one): ``python -m`` looks in the cwd first."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        cmd = ["taskset", "-c", "1", *cmd]
    root = root or Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), **(env or {})}
    return subprocess.Popen(cmd, env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_litellm(binary: str, sim_url: str, port: int, workdir: Path) -> subprocess.Popen:
    """LiteLLM's proxy, one worker, pointed at the same simulator (the peer to compare with)."""
    config = workdir / "litellm.yaml"
    config.write_text(f"""
model_list:
  - model_name: glm-4.7
    litellm_params: {{model: openai/local-model, api_base: "{sim_url}", api_key: none}}
""")
    # It refuses to start without a master key, and fetches its price map online unless told not to.
    return start_pinned([binary, "--config", str(config), "--port", str(port), "--num_workers", "1"],
                        {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_MASTER_KEY": LITELLM_KEY})


LITELLM_KEY = "sk-bench-master-key"
CLOUD_KEY = "sk-bench-cloud-key"


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


async def peer(http, local_http, litellm: str, sim: LlamaCppSim, body: dict, workdir: Path, quick: bool,
               ours: dict[str, float]) -> list[str]:
    """The same overhead and throughput runs through LiteLLM, as ratios to the gateway's."""
    port = free_port()
    proc = start_litellm(litellm, sim.url, port, workdir)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    rows = []
    try:
        await wait_up(http, f"http://127.0.0.1:{port}", "/health/liveliness", timeout=90)
        via = Target(http, url, body, {"Authorization": f"Bearer {LITELLM_KEY}"})
        sim.script, sim.tokens_per_s = SHORT, None
        pairs = await paired(Target(local_http, sim.url + "/chat/completions", body), via, 50 if quick else 300)
        over = pct([p[3] - p[1] for p in pairs], 0.5)
        rows.append(f"| LiteLLM overhead, 1 stream, total | +{1e3 * over:.2f} ms p50 | "
                    f"{over / ours['overhead']:.1f}x the gateway's | |")
        sim.script = LONG
        cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
        results = await load(via, 64, 1)
        elapsed = time.perf_counter() - t0
        rate = sum(r[2] for r in results) / elapsed
        cpu = (cpu_seconds(proc.pid) - cpu0) / elapsed
        rows.append(f"| LiteLLM throughput, 64 streams | {rate:,.0f} chunks/s (CPU {100 * cpu:.0f}% of one core) | "
                    f"the gateway relays {ours['throughput'] / rate:.1f}x as many | |")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return rows


class _Counted(list):
    """Counts the requests a simulator logs without keeping them (here they would only grow the heap)."""
    n = 0

    def append(self, item: object) -> None:
        self.n += 1


def overhead_row(name: str, direct: list[tuple[float, float, int]], via: list[tuple[float, float, int]],
                 i: int) -> str:
    d50, d99 = pct([r[i] for r in direct], 0.5), pct([r[i] for r in direct], 0.99)
    g50, g99 = pct([r[i] for r in via], 0.5), pct([r[i] for r in via], 0.99)
    return (f"| {name} | direct p50 {1e3 * d50:.2f} / p99 {1e3 * d99:.2f} ms | via p50 {1e3 * g50:.2f} / "
            f"p99 {1e3 * g99:.2f} ms | +{1e3 * (g50 - d50):.2f} / +{1e3 * (g99 - d99):.2f} ms |")


async def paired(direct: Target, via: Target, n: int) -> list[tuple[float, float, float, float]]:
    """One stream at a time, direct and through ``via`` alternately: (direct TTFB, direct total,
    via TTFB, via total) per pair, so the difference is taken pair by pair, under the same noise."""
    out = []
    with quiet_gc():
        for _ in range(n):
            d = await one_stream(direct)
            v = await one_stream(via)
            out.append((d[0], d[1], v[0], v[1]))
    return out


def paired_rows(name: str, pairs: list[tuple[float, float, float, float]]) -> list[str]:
    rows = []
    for what, i in (("TTFB", 0), ("total", 1)):
        diff = [p[i + 2] - p[i] for p in pairs]
        d50, v50 = pct([p[i] for p in pairs], 0.5), pct([p[i + 2] for p in pairs], 0.5)
        rows.append(f"| {name}, {what} | direct p50 {1e3 * d50:.2f} ms | via p50 {1e3 * v50:.2f} ms | "
                    f"+{1e3 * pct(diff, 0.5):.2f} / +{1e3 * pct(diff, 0.99):.2f} ms |")
    return rows


async def main(quick: bool, litellm: str | None) -> None:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})  # load generator and simulators on core 0
    # llama-server closes the connection after every streamed response (protocols.md §8): so does
    # the simulator here, and every side of the local path pays a connect per request.
    sim = LlamaCppSim(SHORT, tokens_per_s=None, n_slots=4096, close_after_stream=True)
    # Quota far above what the cloud path's runs at 32 and 256 streams spend in a minute.
    cloud = CerebrasSim(SHORT, tokens_per_s=None, api_key=CLOUD_KEY, rate_limit_tokens_per_minute=10**12)
    sim.requests, cloud.requests = _Counted(), _Counted()
    await sim.start()
    await cloud.start()
    port, floor_port = free_port(), free_port()
    workdir = Path(tempfile.mkdtemp(prefix="glm-bench-"))
    proc = start_gateway(sim.url, cloud.url, port, workdir)
    floor = start_floor(floor_port, sim.url + "/chat/completions")
    gw = f"http://127.0.0.1:{port}"
    # An easy task as the learned scorer sees one: it names the file and the change.
    task = 'Fix the typo "recieve" in README.md'
    body = {"model": "glm-4.7", "stream": True, "messages": [{"role": "user", "content": task}]}
    rows: list[str] = []
    ours: dict[str, float] = {}
    timeout = aiohttp.ClientTimeout(total=600)
    try:
        # Two client sessions: keep-alive toward the gateway, the floor and the cloud simulator;
        # a fresh connection per request straight to the llama.cpp simulator, as the gateway's
        # backend does toward llama-server (force_close, protocols.md §8: it closes after every
        # stream). A pooled direct client would skip the connect each real local request pays.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as http, \
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True),
                                      timeout=timeout) as local_http:
            await wait_up(http, gw)
            await wait_up(http, f"http://127.0.0.1:{floor_port}")
            async with http.post(gw + "/v1/chat/completions", json=body) as resp:
                assert resp.headers["x-glm-backend"] == "local", "the routed model must pick local here"
                await resp.read()
            via = Target(http, gw + "/v1/chat/completions", body, expect="local")
            direct = Target(local_http, sim.url + "/chat/completions", body)
            relay = Target(http, f"http://127.0.0.1:{floor_port}/v1/chat/completions", body)
            await load(via, 8, 25)  # warm-up
            # 1. Memory first, so the load runs' high-water mark is not taken for idle: RSS after a
            # warm-up, then with many slowly dripping streams open.
            idle = rss_kb(proc.pid)
            rows.append(f"| gateway RSS idle | {idle / 1024:.1f} MB | | |")
            sim.script, sim.tokens_per_s = LONG, 0.5
            for n in ((100, 500) if quick else (100, 500, 1000)):
                tasks = [asyncio.ensure_future(one_stream(via)) for _ in range(n)]
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
            sim.script, sim.tokens_per_s = SHORT, None
            phase_done("warm-up and memory")
            # 2. Overhead: time to first byte and total, gateway vs direct, same simulator. One
            # stream: pairs, direct then via, and percentiles of the pairwise difference. Many
            # streams: each side's own percentiles, differenced.
            n = 200 if quick else 1000
            pairs = await paired(direct, via, n)
            ours["overhead"] = pct([p[3] - p[1] for p in pairs], 0.5)
            rows += paired_rows("overhead, 1 stream (local path)", pairs)
            phase_done("1 stream")
            bare = await paired(direct, relay, n)
            rows += paired_rows("floor: a bare aiohttp relay, 1 stream", bare)
            # The cloud path: Cerebras's dialect over a pooled keep-alive connection. (Its own
            # conversation: sticky routing would otherwise keep "fix the typo" on the cloud.)
            cloud_body = {**body, "model": "glm-4.7-cloud", "messages": [{"role": "user", "content": "fix it"}]}
            cloud_direct = Target(http, cloud.url + "/chat/completions", {**cloud_body, "model": "zai-glm-4.7"},
                                  {"Authorization": f"Bearer {CLOUD_KEY}"})
            cloud_via = Target(http, gw + "/v1/chat/completions", cloud_body, expect="cloud")
            pairs = await paired(cloud_direct, cloud_via, n)
            rows += paired_rows("overhead, 1 stream (cloud path)", pairs)
            # The Anthropic front on the same path: the gateway translates the request and every
            # chunk into Messages events. Direct: the upstream request the front sends (no thinking).
            messages_body = {"model": "glm-4.7-cloud", "max_tokens": 1024, "stream": True,
                             "messages": cloud_body["messages"]}
            anthropic_direct = Target(http, cloud.url + "/chat/completions",
                                      {**cloud_body, "model": "zai-glm-4.7", "reasoning_effort": "none",
                                       "max_completion_tokens": 1024}, {"Authorization": f"Bearer {CLOUD_KEY}"})
            anthropic_via = Target(http, gw + "/v1/messages", messages_body, {"anthropic-version": "2023-06-01"},
                                   expect="cloud")
            pairs = await paired(anthropic_direct, anthropic_via, n)
            rows += paired_rows("overhead, 1 stream (cloud path, Anthropic front)", pairs)
            for concurrency, per_worker in ((32, 20 if not quick else 5), (256, 4 if not quick else 2)):
                for t in (direct, via, relay, cloud_direct, cloud_via):  # untimed: open this many connections
                    await load(t, concurrency, 1)                      # first (where they are kept)
                phase_done(f"{concurrency} streams, untimed")
                d, v, b = [await load(t, concurrency, per_worker) for t in (direct, via, relay)]
                phase_done(f"{concurrency} streams")
                for name, i in (("TTFB", 0), ("total", 1)):
                    rows.append(overhead_row(f"overhead, {concurrency} streams (local path), {name}", d, v, i))
                    rows.append(overhead_row(f"floor: a bare aiohttp relay, {concurrency} streams, {name}", d, b, i))
                d, v = [await load(t, concurrency, per_worker) for t in (cloud_direct, cloud_via)]
                for name, i in (("TTFB", 0), ("total", 1)):
                    rows.append(overhead_row(f"overhead, {concurrency} streams (cloud path), {name}", d, v, i))
            # 3. Relay throughput: chunks per second at high concurrency, and the gateway's CPU.
            sim.script = LONG
            for name, t in (("direct", direct), ("gateway", via)):
                cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
                results = await load(t, 64, 1 if quick else 3)
                elapsed = time.perf_counter() - t0
                cpu = (cpu_seconds(proc.pid) - cpu0) / elapsed
                chunks = sum(r[2] for r in results)
                ours["throughput"] = chunks / elapsed
                rows.append(f"| throughput {name}, 64 streams x {len(results) // 64} | {chunks / elapsed:,.0f} "
                            f"chunks/s | gateway CPU {100 * cpu:.0f}% of one core | |")
            phase_done("throughput")
            # 4. The peer, optional: LiteLLM's proxy against the same simulator, same run.
            if litellm:
                rows += await peer(http, local_http, litellm, sim, body, workdir, quick, ours)
            else:
                rows.append("| LiteLLM | not run (pass --litellm PATH/TO/litellm) | | |")
            # 5. Which backend served: every local-path request through the gateway must have been
            # answered by the local backend, and the cloud simulator must have seen no more
            # requests than the cloud path sent it.
            await asyncio.sleep(0.5)  # the cloud simulator logs a request when it ends
            local = SERVED["local"]
            elsewhere = sum(local.values()) - local["local"]
            extra = cloud.requests.n - SENT[cloud_direct.url] - SERVED["cloud"]["cloud"]
            named = ", ".join(f"{k}: {v}" for k, v in sorted(local.items()))
            rows.append(f"| local-path requests via the gateway not served locally | {elsewhere} of "
                        f"{sum(local.values())} (x-glm-backend {named}) | cloud simulator: {extra} chat "
                        f"requests beyond the cloud path's | |")
            rows.append(f"| not served locally, by phase | {'; '.join(PHASES)} | | |")
    finally:
        for p in (proc, floor):
            p.terminate()
            p.wait(timeout=20)
        await sim.stop()
        await cloud.stop()
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"aiohttp {aiohttp.__version__}; gateway pinned to core 1, client+simulator to core 0")
    print("| measure | direct / value | via the gateway (or as named) | difference (p50 / p99) |")
    print("|---|---|---|---|")
    print("\n".join(rows))
    print("routing decision and failover switch times: python -m tests.bench.routing / tests.bench.failover")
    if elsewhere or extra:
        print(f"WARNING: {elsewhere} local-path requests via the gateway were not served by the local backend "
              f"(cloud simulator: {extra} unexpected requests); the local-path figures include them",
              file=sys.stderr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer requests, for a smoke run")
    parser.add_argument("--litellm", help="path to the litellm proxy command, in its own venv")
    args = parser.parse_args()
    asyncio.run(main(args.quick, args.litellm))
