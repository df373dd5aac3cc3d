"""Routing quality through the real routing path: new-task routing on the held-out test split,
and escalation of replayed agent conversations.

    python -m tests.bench.routing_quality [--split test|dev] [--json PATH] [--concurrency 8]

Everything runs in one process on loopback: both simulators (``LlamaCppSim`` with n_ctx 65536
at full speed, ``CerebrasSim`` with rate limits no run can reach), the real gateway app from
``create_app(cfg)`` served by ``web.AppRunner``/``TCPSite``, and the official ``openai``
client (``AsyncOpenAI``, ``max_retries=0``, non-streaming, ``max_tokens`` 32). The config is
``GatewayConfig()`` with the backends pointed at the simulators, a ledger in a temporary
directory and one change that is not routing: ``limits.requests_per_minute_per_key`` raised,
because the bench is one client sending thousands of requests a minute. Routing is the default
(``routing.classifier.method: learned``, escalation window 4, 2 signals) unless a row says
otherwise. The route is read from the response headers ``x-glm-backend`` and
``x-glm-route-reason``; nothing inside the gateway is called.

**Part 1, new tasks.** Every task of the corpus's *test* split (``routing/data/tasks.jsonl``) is
sent as a new Cline task in two shapes (:mod:`tests.bench.cline_shapes`): the classic extension
(long XML-tools system prompt, ``<task>`` and ``<environment_details>`` parts, no ``tools``) and
the Cline CLI (the captured request-1 with its task replaced, every other one wrapped in
``<user_input mode="act">``, the ``[SYSTEM]`` reminder and the four native tools kept), and as a
new Claude Code session (:mod:`tests.bench.claude_shapes`) through ``POST /v1/messages`` with the
official ``anthropic`` client (``AsyncAnthropic``), model ``claude-sonnet-4-5-20250929``, which
the default ``claude-*`` alias routes like ``glm-4.7``: three system blocks (a billing header
whose ``cch`` changes per request, the identity line, the instructions), seven tools, and the
task after the claudeMd and todo ``<system-reminder>`` blocks. Each task's two background
requests on Claude Code's small model (title, new topic) go through a gateway of their own and
should stay local (``claude-*haiku*`` → ``local_first``). The test
split is held out: ``python -m routing.train`` never reads it, nothing was tuned on it, and this
bench only reads it. A task counts as "cloud" when ``x-glm-backend`` says so; a complex label
should go to the cloud, a simple one stay local. The same tasks go through the old keyword
classifier (``method: keywords``) and through always-local, each on a fresh gateway, so the
figures compare like for like. ``--split dev`` is for comparison only: the shipped model was
fitted on train + dev, so its dev figures are in-sample.

**Part 2, escalation replay.** Agent conversations are replayed turn by turn (each request
carries the history so far) through the routed model ``glm-4.7``, in both Cline shapes, and in
Claude Code's (Anthropic ``tool_use``/``tool_result`` blocks, reminders after the results; its
failing conversations get ``is_error`` results with Claude Code's ``<tool_use_error>`` texts,
its healthy ones Bash ``Exit code N`` failures and the tag quoted inside Read, Grep and Bash
output; it reuses the Cline CLI's tasks, on a gateway of its own). The bench
writes the agent's side (assistant tool calls and Cline's feedback); the backends' answers are
the simulators' canned text and are not fed back, except in the runaway loop. Each
conversation starts with an easy task from the corpus's *train* split, so its first turns
route local. Failing conversations feed Cline's own failure texts back where Cline puts them;
healthy ones carry the same texts inside file contents, command output and diffs, and at most
one isolated mistake followed by recovery. The expected escalation request is computed here
from how each conversation was built (the first request whose last ``window`` feedback turns
hold ``signals`` turns with a failure text, or one "You seem to be having trouble proceeding"),
and compared with the first request answered with ``x-glm-route-reason: escalated``. Last, a
Cline CLI runaway loop (text-only answers, each followed by the ``[SYSTEM]`` reminder, 30
requests; the answers fed back are the gateway's own) shows where the loop escalates, where the
runaway guard refuses it, and what it cost. After a refusal the replay keeps going, like an
agent that ignores the error, and prints each status.

The bench is split by what each part holds: :mod:`tests.bench.routing_quality_harness` (the
gateway on loopback, the clients, the config), :mod:`tests.bench.routing_quality_tasks` (part 1),
:mod:`tests.bench.routing_quality_replay` (part 2 and the runaway loop) and
:mod:`tests.bench.routing_quality_report` (the tables); this module runs them in order.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import openai

from backends.sim import CerebrasSim, LlamaCppSim
from config import GatewayConfig
from routing import TokenCounter, corpus
from tests.bench.routing_quality_harness import CLOUD_KEY, CLOUD_SCRIPT, LOCAL_SCRIPT, SHAPES, Forgetful, LogTally
from tests.bench.routing_quality_replay import FAILING_PER_SHAPE, HEALTHY_PER_SHAPE, part2_shape, replay_tasks, runaway
from tests.bench.routing_quality_report import print_background, print_part1, print_part2
from tests.bench.routing_quality_tasks import CONFIGS, background_run, part1_run


# --- main ------------------------------------------------------------------------------------------
async def main(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    tally = LogTally()
    logging.getLogger().addHandler(tally)
    logging.getLogger().setLevel(logging.WARNING)
    counter = TokenCounter.default()
    # The simulator closes the socket after every stream, as llama-server does: before the gateway
    # stopped pooling llama.cpp sockets, that sent 0-14 of 179 first turns to the cloud here.
    # The "fallback" column counts any such request: it is cloud spend the classifier did not choose.
    local = LlamaCppSim(LOCAL_SCRIPT, tokens_per_s=None, n_ctx=65536, n_slots=32)
    cloud = CerebrasSim(CLOUD_SCRIPT, tokens_per_s=None, api_key=CLOUD_KEY, rate_limit_tokens_per_minute=10**12,
                        rate_limit_requests_per_day=10**9)
    local.requests = cloud.requests = Forgetful()
    await local.start()
    await cloud.start()
    sims = (local, cloud)
    report: dict[str, Any] = {"split": args.split}
    print(f"# routing quality ({platform.machine()}, {sys.platform}, Python {platform.python_version()}, "
          f"openai {openai.__version__}, token counter {counter.method})")
    try:
        with tempfile.TemporaryDirectory(prefix="glm-routing-quality-") as tmpdir:
            tmp = Path(tmpdir)
            rows = corpus.split(corpus.load(), args.split)
            part1: dict[str, dict[str, dict]] = {}
            t0 = time.perf_counter()
            for name, method, strategy in CONFIGS:
                part1[name] = {}
                for shape in SHAPES:
                    part1[name][shape] = await part1_run(sims, counter, tmp, rows, shape, method, strategy,
                                                         args.concurrency)
            diffs = print_part1(args.split, rows, part1)
            background = await background_run(sims, counter, tmp, rows, args.concurrency)
            print_background(background)
            print(f"\n(part 1: {time.perf_counter() - t0:.1f}s)")
            report["part1"] = {"tasks": len(rows), "results": part1, "shape_difference_points": diffs,
                               "claude_code_background": background}

            t0 = time.perf_counter()
            escalation = GatewayConfig().routing.escalation
            per = FAILING_PER_SHAPE + HEALTHY_PER_SHAPE
            tasks = replay_tasks(2 * per + 1)  # the pool has 241 easy tasks: Claude Code reuses the CLI's
            per_shape = {}
            for j, shape in enumerate(SHAPES):
                chunk = tasks[min(j, 1) * per:(min(j, 1) + 1) * per]  # each shape on its own gateway
                per_shape[shape] = await part2_shape(sims, counter, tmp, shape, chunk, args.concurrency)
            loop = await runaway(sims, counter, tmp, tasks[-1])
            print_part2(per_shape, loop, escalation)
            print(f"\n(part 2: {time.perf_counter() - t0:.1f}s)")
            report["part2"] = {"shapes": per_shape, "runaway": loop,
                               "escalation": {"window": escalation.window, "signals": escalation.signals,
                                              "alarms": list(escalation.alarms)}}
    finally:
        await local.stop()
        await cloud.stop()
        logging.getLogger().removeHandler(tally)
    report["gateway_log"] = {"counts": dict(tally.counts), "first": tally.first}
    if tally.counts:
        print("\nGateway log, warnings and errors: " + "; ".join(
            f"{k} x{v} (first: {tally.first[k]!r})" for k, v in tally.counts.items()))
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(f"\nTotal {report['seconds']}s")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=("test", "dev"), default="test",
                        help="corpus split for part 1 (test: held out, the reported one)")
    parser.add_argument("--json", metavar="PATH", help="write every figure to this JSON file")
    parser.add_argument("--concurrency", type=int, default=8, help="requests (or conversations) in flight")
    args = parser.parse_args()
    result = asyncio.run(main(args))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
