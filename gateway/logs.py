"""Logging to stderr and a rotating file, with secrets scrubbed as a last line of defence.

The code never formats a key into a log message; :class:`SecretFilter` makes sure that a
mistake (an upstream echoing our Authorization header in an error, say) cannot leak one either.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
from typing import Iterable

from config import GatewayConfig

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
OUR_LOGGERS = ("gateway", "backends", "routing", "config")


class SecretFilter(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Short values would scrub ordinary words; real keys are long.
        self.secrets = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            if any(s in message for s in self.secrets):
                for secret in self.secrets:
                    message = message.replace(secret, "***")
                record.msg, record.args = message, None
        return True


def secrets_of(cfg: GatewayConfig) -> list[str]:
    values = [cfg.backends.local.api_key, cfg.backends.cloud.api_key]
    for backend in (cfg.backends.local, cfg.backends.cloud):
        values.extend(str(v) for v in backend.headers.values())
    return [v for v in values if v]


def setup_logging(cfg: GatewayConfig) -> list[logging.Handler]:
    """Install handlers on our loggers (not the root: library chatter stays out)."""
    level = getattr(logging, cfg.logging.level.upper())
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if cfg.logging.file:
        directory = os.path.dirname(cfg.logging.file)
        if directory:
            os.makedirs(directory, exist_ok=True)
        handlers.append(logging.handlers.RotatingFileHandler(
            cfg.logging.file, maxBytes=cfg.logging.max_bytes, backupCount=cfg.logging.backups,
            encoding="utf-8"))
    scrub = SecretFilter(secrets_of(cfg))
    for handler in handlers:
        handler.setFormatter(logging.Formatter(FORMAT))
        handler.addFilter(scrub)
    for name in OUR_LOGGERS + ("aiohttp",):
        logger = logging.getLogger(name)
        logger.setLevel(level if name != "aiohttp" else max(level, logging.WARNING))
        for handler in handlers:
            logger.addHandler(handler)
        logger.propagate = False
    return handlers
