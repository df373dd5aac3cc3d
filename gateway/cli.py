"""``glm-token-saver``: serve, check-config, demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
from typing import Sequence

import attrs

from config import ConfigError, GatewayConfig, dump_yaml, load_config
from gateway import server
from gateway.ledger import LedgerError
from gateway.logs import setup_logging

log = logging.getLogger("gateway")

DEMO_LOCAL = (
    "Hello from the simulated local llama.cpp server. Easy turns like this one are served "
    "locally for free."
)
DEMO_CLOUD = (
    "Hello from simulated Cerebras GLM 4.7. Hard turns like this one (refactoring, debugging, "
    "design) go to the fast, paid cloud."
)
DEMO_HARD = "Refactor the scheduler architecture and debug the race condition in the worker pool"


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
    except (ConfigError, LedgerError) as exc:
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


async def run_demo(host: str, port: int) -> None:
    """The gateway wired to a simulated llama-server and a simulated Cerebras: no model, no key."""
    from backends.sim import CerebrasSim, LlamaCppSim, Script

    local = LlamaCppSim(Script(content=DEMO_LOCAL), tokens_per_s=25)
    cloud = CerebrasSim(Script(content=DEMO_CLOUD, reasoning="The user wants a greeting."),
                        tokens_per_s=250)
    local_url, cloud_url = await local.start(), await cloud.start()
    try:
        cfg = GatewayConfig()
        cfg = attrs.evolve(
            cfg,
            listen=attrs.evolve(cfg.listen, host=host, port=port),
            # Demo traffic must not land in a real ledger's savings and budgets.
            ledger=attrs.evolve(cfg.ledger, path=os.path.join(tempfile.mkdtemp(prefix="glm-demo-"), "ledger.sqlite3")),
            backends=attrs.evolve(
                cfg.backends,
                local=attrs.evolve(cfg.backends.local, base_url=local_url, model="local-model"),
                cloud=attrs.evolve(cfg.backends.cloud, base_url=cloud_url, api_key="demo-key"),
            ),
        )
        setup_logging(cfg)

        async def banner(url: str) -> None:
            print(f"""
GLM Token Saver demo: gateway on {url}, simulated llama.cpp on {local_url},
simulated Cerebras on {cloud_url}. Try:

  curl -N {url}/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{{"model": "{cfg.models.routed}", "stream": true, "messages": [{{"role": "user", "content": "Say hello"}}]}}'

An easy task is served locally; a hard one goes to the cloud (see the x-glm-backend and
x-glm-route-reason response headers with curl -i):

  curl -Ni {url}/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{{"model": "{cfg.models.routed}", "stream": true, "messages": [{{"role": "user", "content": "{DEMO_HARD}"}}]}}'

Model ids: {cfg.models.routed} (routed), {cfg.models.local}, {cfg.models.cloud}. Ctrl-C stops.
""", flush=True)

        await server.serve(cfg, ready=banner)
    finally:
        await local.stop()
        await cloud.stop()


if __name__ == "__main__":
    sys.exit(main())
