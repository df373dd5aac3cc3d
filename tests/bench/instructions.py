"""CPU instructions per request of the gateway process, counted by valgrind: a figure that does
not move with the machine's load, for comparing versions when timings are too noisy to.

    python -m tests.bench.instructions [--requests 200] [--version-dir DIR ...]

Each version (a checkout: ``git worktree add /tmp/old <commit>``) runs as its own gateway
process under ``valgrind --tool=callgrind``, against simulators started here (this checkout's,
the same for every version, at full speed). The gateway serves ``--requests`` streamed requests
on the cloud path (a pinned Cerebras request, 20-token answer) after a warm-up; the figure is
the difference between two runs, ``--requests`` apart, divided by ``--requests``, so start-up
and imports cancel out. Repeat runs agree to about 0.3%.

``--opcodes`` counts Python opcodes per request per function instead (in-process, with a
tracer), to see where a difference comes from.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp

from backends.sim import CerebrasSim, LlamaCppSim, Script
from tests.conftest import CLOUD_KEY

ANSWER = Script(content="one two three four five six seven eight nine ten " * 2)
BODY = {"model": "glm-4.7-cloud", "stream": True, "messages": [{"role": "user", "content": "fix it"}]}
WARM_UP = 20


def config(local_url: str, cloud_url: str, port: int, work: Path) -> Path:
    # Not the timing suite's config: under valgrind a run lasts minutes, and no health probe or
    # keep-alive ping may fall inside the counted requests, or the count would vary run to run.
    path = work / "gw.yaml"
    slow = "first_token_timeout_s: 600, stall_timeout_s: 600, health_interval_s: 600"
    path.write_text(f"""
listen: {{port: {port}}}
backends:
  local: {{base_url: "{local_url}", {slow}}}
  cloud: {{base_url: "{cloud_url}", api_key: "{CLOUD_KEY}", {slow}}}
logging: {{file: "", level: info}}
limits: {{max_streams: 100000, max_streams_per_key: 100000, requests_per_minute_per_key: 100000000}}
ledger: {{path: "{work / 'ledger.sqlite3'}"}}
server: {{keepalive_s: 600}}
""")
    return path


async def count(version: Path, requests: int, local_url: str, cloud_url: str, keep: Path | None = None) -> int:
    """Instructions of one gateway process's whole life, serving ``requests`` after the warm-up.
    ``keep``: where to leave valgrind's profile (``callgrind_annotate`` reads it)."""
    work = Path(tempfile.mkdtemp(prefix="glm-instructions-"))
    port = 18500 + (os.getpid() + requests) % 400
    out = work / "callgrind.out"
    env = {**os.environ, "PYTHONPATH": str(version), "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no", "--collect-jumps=no",
         sys.executable, "-m", "gateway.cli", "serve", "--config", str(config(local_url, cloud_url, port, work))],
        cwd=version, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 600
            while True:
                try:  # up, and its first probe has found the cloud
                    async with http.get(url + "/health") as resp:
                        if resp.status == 200 and (await resp.json())["backends"]["cloud"]["state"] == "ok":
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the gateway in {version} did not start under valgrind")
                await asyncio.sleep(1)
            for _ in range(WARM_UP + requests):
                async with http.post(url + "/v1/chat/completions", json=BODY) as resp:
                    if resp.status != 200:
                        raise RuntimeError(f"{version}: HTTP {resp.status}: {await resp.text()}")
                    await resp.read()
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.to_thread(proc.wait, 600)
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(out, keep / f"callgrind.{version.name}.{requests}")
    found = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)
    if found is None:
        raise RuntimeError(f"no totals in {out}")
    return int(found.group(1))


async def instructions(versions: list[Path], requests: int, keep: Path | None = None) -> None:
    local = LlamaCppSim(ANSWER, tokens_per_s=None)
    cloud = CerebrasSim(ANSWER, tokens_per_s=None, api_key=CLOUD_KEY)
    local_url, cloud_url = await local.start(), await cloud.start()
    try:
        print(f"# instructions per request, cloud path, 20-token answers ({requests} requests apart)")
        for version in versions:
            low = await count(version, 0, local_url, cloud_url, keep)
            high = await count(version, requests, local_url, cloud_url, keep)
            print(f"{version}: {(high - low) / requests / 1e6:.3f} M instructions per request", flush=True)
    finally:
        await local.stop()
        await cloud.stop()


async def opcodes(requests: int) -> None:
    """Python opcodes per request per function of this checkout's gateway, in process."""
    from aiohttp.test_utils import TestServer

    from gateway.app import create_app
    from routing import TokenCounter
    from tests.conftest import make_config

    root = str(Path(__file__).resolve().parents[2])
    counts: collections.Counter[tuple[str, str]] = collections.Counter()

    def tracer(frame, event, arg):  # noqa: ANN001, ANN202 (sys.settrace's signature)
        path = frame.f_code.co_filename
        if not path.startswith(root) or any(part in path for part in ("/sim/", "/tests/", "/.venv/")):
            return None
        frame.f_trace_opcodes, frame.f_trace_lines = True, False
        key = (path[len(root) + 1:], frame.f_code.co_name)

        def local(frame, event, arg):  # noqa: ANN001, ANN202
            if event == "opcode":
                counts[key] += 1
            return local
        return local

    local = LlamaCppSim(ANSWER, tokens_per_s=None)
    cloud = CerebrasSim(ANSWER, tokens_per_s=None, api_key=CLOUD_KEY)
    cfg = make_config(await local.start(), await cloud.start(), ledger={"path": ":memory:"})
    server = TestServer(create_app(cfg, token_counter=TokenCounter.default()))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            async def one() -> None:
                async with http.post(server.make_url("/v1/chat/completions"), json=BODY) as resp:
                    await resp.read()
            for _ in range(WARM_UP):
                await one()
            threading.settrace(tracer)
            sys.settrace(tracer)
            for _ in range(requests):
                await one()
            sys.settrace(None)
            threading.settrace(None)
    finally:
        await server.close()
        await local.stop()
        await cloud.stop()
    print(f"# {sum(counts.values()) / requests:.0f} Python opcodes per request in the gateway's own code")
    for (path, name), n in counts.most_common(40):
        print(f"{n / requests:9.1f}  {path}:{name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--version-dir", type=Path, action="append", default=[],
                        help="a checkout to measure (repeatable; default: this one)")
    parser.add_argument("--opcodes", action="store_true", help="Python opcodes per function, in process")
    parser.add_argument("--keep", type=Path, help="a folder to keep each run's callgrind profile in")
    args = parser.parse_args()
    if args.opcodes:
        asyncio.run(opcodes(min(args.requests, 50)))
    else:
        versions = args.version_dir or [Path(__file__).resolve().parents[2]]
        asyncio.run(instructions([v.resolve() for v in versions], args.requests, args.keep))


if __name__ == "__main__":
    main()
