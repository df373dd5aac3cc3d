"""Two or more versions of the gateway timed against each other in one run.

    python -m tests.bench.versions --version-dir /tmp/old --version-dir . [--rounds 100] [--path cloud]

Separate runs of ``tests.bench.suite`` cannot tell a 5% difference apart on a machine whose own
speed drifts by more than that between runs (and within one). Here every version's gateway runs
at once, each its own process pinned to the same core as in the suite, against the same
simulators. Each round gives every version, in an order that rotates round by round, a block:
a few unmeasured requests (its caches back from the other versions' turns, as the suite's one
gateway has them), then ``--block`` pairs of one streamed request straight to the simulator and
the same through the version. A pair's overhead is the version's time minus the direct one's;
two versions are compared by the difference of their overheads' p50s, with a bootstrap interval
that resamples whole rounds: drift slower than a round falls on every version alike. Naming one
checkout twice shows the method's own spread (about +-0.03 ms here).

Idle cores on a VM wake slowly: an idle-priority busy loop per core (``SCHED_IDLE``) keeps
that out of the figures. The gateways' work after a response ends (accounting, the ledger, the
log line) overlaps the next direct request, which runs on the other core.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import tempfile
from pathlib import Path

import aiohttp

from backends.sim import CerebrasSim, LlamaCppSim
from tests.bench.suite import CLOUD_KEY, SHORT, Target, _Counted, one_stream, pct, quiet_gc, start_gateway, wait_up
from tests.test_cli import free_port


def p50_gap(base: list[list[float]], other: list[list[float]], rng: random.Random,
            resamples: int = 1000) -> tuple[float, float, float]:
    """``other``'s p50 minus ``base``'s, and a 95% bootstrap interval of it that resamples whole
    rounds (a list of values per round), so both versions' requests of a round stay together."""
    n = len(base)
    gaps = []
    for _ in range(resamples):
        picks = [rng.randrange(n) for _ in range(n)]
        gaps.append(pct([x for i in picks for x in other[i]], 0.5) - pct([x for i in picks for x in base[i]], 0.5))
    gaps.sort()
    flat = [x for r in other for x in r], [x for r in base for x in r]
    return pct(flat[0], 0.5) - pct(flat[1], 0.5), gaps[int(0.025 * resamples)], gaps[int(0.975 * resamples)]


async def compare(versions: list[Path], rounds: int, path: str, block: int = 20, warm: int = 3) -> None:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})  # load generator and simulators on core 0, as in the suite
    local = LlamaCppSim(SHORT, tokens_per_s=None, n_slots=4096, close_after_stream=True)
    cloud = CerebrasSim(SHORT, tokens_per_s=None, api_key=CLOUD_KEY, rate_limit_tokens_per_minute=10**12)
    local.requests, cloud.requests = _Counted(), _Counted()  # not kept: they would grow the heap
    await local.start()
    await cloud.start()
    procs, urls = [], []
    for version in versions:
        port = free_port()
        procs.append(start_gateway(local.url, cloud.url, port, Path(tempfile.mkdtemp(prefix="glm-versions-")),
                                   version))
        urls.append(f"http://127.0.0.1:{port}")
    # The suite's 1-stream paths: local pays a connect per request on every side (llama-server
    # closes after each stream); the cloud keeps its connections.
    if path == "local":
        body = {"model": "glm-4.7-local", "stream": True, "messages": [{"role": "user", "content": "fix it"}]}
        direct_url, direct_body, direct_headers = local.url + "/chat/completions", body, None
    else:
        body = {"model": "glm-4.7-cloud", "stream": True, "messages": [{"role": "user", "content": "fix it"}]}
        direct_url, direct_headers = cloud.url + "/chat/completions", {"Authorization": f"Bearer {CLOUD_KEY}"}
        direct_body = {**body, "model": "zai-glm-4.7"}
    timeout = aiohttp.ClientTimeout(total=600)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as http, \
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=path == "local"),
                                      timeout=timeout) as direct_http:
            for url in urls:
                await wait_up(http, url, timeout=60)
            direct = Target(direct_http, direct_url, direct_body, direct_headers)
            vias = [Target(http, url + "/v1/chat/completions", body, expect=path) for url in urls]
            for via in vias:  # warm-up: imports, first connections, the scorer's caches
                for _ in range(50):
                    await one_stream(via)
            # Per version, per round: its block's (TTFB, total) overheads.
            overheads: list[list[list[tuple[float, float]]]] = [[] for _ in versions]
            with quiet_gc():
                for r in range(rounds):
                    for k in range(len(vias)):
                        i = (r + k) % len(vias)
                        for _ in range(warm):  # its caches back from the other versions' turns
                            await one_stream(vias[i])
                        pairs = []
                        for _ in range(block):
                            d = await one_stream(direct)
                            v = await one_stream(vias[i])
                            pairs.append((v[0] - d[0], v[1] - d[1]))
                        overheads[i].append(pairs)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=20)
        await local.stop()
        await cloud.stop()
    rng = random.Random(1)
    print(f"# {path} path, 1 stream, {rounds} rounds of {block} pairs per version (after {warm} unmeasured); "
          "overhead = time via the version minus direct, pair by pair")
    print("| version | measure | overhead p50 | p99 | p50 against the first (95% interval) |")
    print("|---|---|---|---|---|")
    for version, mine in zip(versions, overheads, strict=True):
        for what, j in (("TTFB", 0), ("total", 1)):
            base = [[o[j] for o in r] for r in overheads[0]]
            ours = [[o[j] for o in r] for r in mine]
            gap, low, high = p50_gap(base, ours, rng)
            flat = [x for r in ours for x in r]
            against = "" if mine is overheads[0] else \
                f"{1e3 * gap:+.3f} ms ({1e3 * low:+.3f} to {1e3 * high:+.3f})"
            print(f"| {version} | {what} | +{1e3 * pct(flat, 0.5):.3f} ms | +{1e3 * pct(flat, 0.99):.3f} ms | "
                  f"{against} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version-dir", type=Path, action="append", required=True,
                        help="a checkout to time (repeat; the first is the baseline)")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--block", type=int, default=20, help="measured pairs per version per round")
    parser.add_argument("--warm", type=int, default=3, help="unmeasured requests before each block")
    parser.add_argument("--path", choices=("cloud", "local"), default="cloud")
    args = parser.parse_args()
    asyncio.run(compare([v.resolve() for v in args.version_dir], args.rounds, args.path, args.block, args.warm))


if __name__ == "__main__":
    main()
