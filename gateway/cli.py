"""``glm-token-saver``: serve, check-config, demo, example."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Sequence

import attrs
import orjson

from config import ConfigError, GatewayConfig, dump_yaml, load_config
from gateway import demo, server
from gateway.ledger import LedgerError
from gateway.logs import setup_logging
from routing.scorer import ModelFileError

log = logging.getLogger("gateway")


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
    run_demo = sub.add_parser("demo", help="run the gateway against built-in simulated backends")
    run_demo.add_argument("--host", default="127.0.0.1")
    run_demo.add_argument("--port", type=int, default=8000)
    example = sub.add_parser("example", help="print an example request body (for curl -d @-)")
    example.add_argument("name", choices=sorted(demo.EXAMPLES))
    example.add_argument("--model", default=GatewayConfig().models.routed)
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
        if args.command == "example":
            print(orjson.dumps(demo.EXAMPLES[args.name](args.model)).decode())
            return 0
        asyncio.run(demo.run(args.host, args.port))
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


if __name__ == "__main__":
    sys.exit(main())
