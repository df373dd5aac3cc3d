"""``glm-token-saver``: serve, check-config, demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
from typing import TYPE_CHECKING, Sequence

import attrs

from config import ConfigError, GatewayConfig, dump_yaml, load_config
from gateway import server
from gateway.ledger import LedgerError
from gateway.logs import setup_logging
from routing.scorer import ModelFileError

if TYPE_CHECKING:  # the simulators load only for the demo, never for serve
    from backends.sim import CerebrasSim, LlamaCppSim

log = logging.getLogger("gateway")

DEMO_LOCAL = (
    "Hello from the simulated local llama.cpp server. Easy turns like this one are served "
    "locally for free."
)
DEMO_CLOUD = (
    "Hello from simulated Cerebras GLM 4.7. Hard tasks like this one (an open investigation, "
    "a design, a change across components) go to the fast, paid cloud."
)
# What separates them is scope, not vocabulary: the easy one names the place and the change.
DEMO_EASY = 'Fix the typo "recieve" in README.md'
DEMO_HARD = "Invoice numbers sometimes repeat after a deploy. Find out why and fix it."


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="glm-token-saver",
        description="OpenAI-compatible gateway routing between local llama.cpp and a paid cloud.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", default=os.environ.get("GLM_TOKEN_SAVER_CONFIG"),
                       help="YAML config (default: $GLM_TOKEN_SAVER_CONFIG, else built-in defaults)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    check = sub.add_parser("check-config", help="validate a config and print it, secrets redacted")
    check.add_argument("file")
    demo = sub.add_parser("demo", help="run the gateway against built-in simulated backends")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)

    try:
        if args.command == "check-config":
            cfg = load_config(args.file)
            print(dump_yaml(cfg), end="")
            print(f"# {args.file}: OK", file=sys.stderr)
            return 0
        if args.command == "serve":
            cfg = _override_listen(load_config(args.config), args.host, args.port)
            setup_logging(cfg)
            asyncio.run(server.serve(cfg, args.config))
            return 0
        asyncio.run(run_demo(args.host, args.port))
        return 0
    except (ConfigError, LedgerError, ModelFileError) as exc:
        print(f"glm-token-saver: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the port is taken: say so, not a traceback
        print(f"glm-token-saver: {exc}", file=sys.stderr)
        return 1


def _override_listen(cfg: GatewayConfig, host: str | None, port: int | None) -> GatewayConfig:
    listen = attrs.evolve(cfg.listen, **{k: v for k, v in (("host", host), ("port", port)) if v})
    cfg = attrs.evolve(cfg, listen=listen)
    problems = cfg.cross_checks()  # --host 0.0.0.0 must meet the same rules as the file
    if problems:
        raise ConfigError(problems, "command line")
    return cfg


def demo_backends() -> tuple["LlamaCppSim", "CerebrasSim"]:
    """The demo's simulated llama-server and Cerebras (not started yet).

    The local one holds as much context as ``backends.local.context_window`` (65,536 tokens by
    default), since the gateway learns its real window from its ``/props``: Cline's system prompt
    alone is 8k-12k tokens, so a smaller simulated window sent every Cline request to the cloud
    (``context``) and made the router look as if it never served anything locally (issue #12).
    """
    from backends.sim import CerebrasSim, LlamaCppSim, Script

    local = LlamaCppSim(Script(content=DEMO_LOCAL), tokens_per_s=25,
                        n_ctx=GatewayConfig().backends.local.context_window)
    cloud = CerebrasSim(Script(content=DEMO_CLOUD, reasoning="The user wants a greeting."),
                        tokens_per_s=250)
    return local, cloud


def demo_config(host: str, port: int, local_url: str, cloud_url: str, ledger_path: str) -> GatewayConfig:
    """The defaults, pointed at the demo's simulators."""
    cfg = GatewayConfig()
    return attrs.evolve(
        cfg,
        listen=attrs.evolve(cfg.listen, host=host, port=port),
        ledger=attrs.evolve(cfg.ledger, path=ledger_path),
        backends=attrs.evolve(
            cfg.backends,
            local=attrs.evolve(cfg.backends.local, base_url=local_url, model="local-model"),
            cloud=attrs.evolve(cfg.backends.cloud, base_url=cloud_url, api_key="demo-key"),
        ),
    )


async def run_demo(host: str, port: int) -> None:
    """The gateway wired to a simulated llama-server and a simulated Cerebras: no model, no key."""
    local, cloud = demo_backends()
    local_url, cloud_url = await local.start(), await cloud.start()
    try:
        # Demo traffic must not land in a real ledger's savings and budgets.
        ledger = os.path.join(tempfile.mkdtemp(prefix="glm-demo-"), "ledger.sqlite3")
        cfg = demo_config(host, port, local_url, cloud_url, ledger)
        setup_logging(cfg)

        easy = DEMO_EASY.replace('"', '\\"')  # inside the JSON of a shell command

        async def banner(url: str) -> None:
            print(f"""
GLM Token Saver demo: gateway on {url}, simulated llama.cpp on {local_url}
({local.n_ctx} tokens of context), simulated Cerebras on {cloud_url}. Try:

  curl -N {url}/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{{"model": "{cfg.models.routed}", "stream": true, "messages": [{{"role": "user", "content": "{easy}"}}]}}'

An easy task is served locally; a hard one goes to the cloud (see the x-glm-backend and
x-glm-route-reason response headers with curl -i):

  curl -Ni {url}/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{{"model": "{cfg.models.routed}", "stream": true, "messages": [{{"role": "user", "content": "{DEMO_HARD}"}}]}}'

Or point Cline here: OpenAI Compatible provider, base URL {url}/v1, any API key, model ID
{cfg.models.routed}. Model ids: {cfg.models.routed} (routed), {cfg.models.local}, {cfg.models.cloud}.
Ctrl-C stops.
""", flush=True)

        await server.serve(cfg, ready=banner)
    finally:
        await local.stop()
        await cloud.stop()


if __name__ == "__main__":
    sys.exit(main())
