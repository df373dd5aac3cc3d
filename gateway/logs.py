"""Logging to stderr and a rotating file, with secrets scrubbed as a last line of defence, and
the request log: one JSON line per request on the ``gateway.request`` logger.

The code never formats a key into a log message; :class:`SecretFilter` makes sure that a
mistake (an upstream echoing our Authorization header in an error, say) cannot leak one either.

A request that reached routing gets its line from the handler (the ledger row, at info). One
refused before that (a 401, a client limit, no backend available or over budget, bad input)
gets it from :func:`request_log_middleware`: status, code, ``retry_after_s`` and the client
(``key#N`` or its address), at info for refusals and at debug for the client's own mistakes.
Never a body, never a key.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import time
from typing import Any, Iterable

import orjson
from aiohttp import web

from config import GatewayConfig
from gateway.errors import ERROR, Handler
from gateway.keys import CLIENT, REQUEST_ID

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
OUR_LOGGERS = ("gateway", "backends", "routing", "config")
# Set by the handler once it has written the request's line: the middleware must not add another.
LOGGED = web.RequestKey("request_logged", bool)
# Refusals an operator needs to see at info (why did Cline sit still?); other 4xx are the
# client's own mistakes, at debug.
REFUSALS = frozenset({401, 403, 429})


class SecretFilter(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Short values would scrub ordinary words; real keys are long.
        self.secrets = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.secrets and any(s in message for s in self.secrets):
            for secret in self.secrets:
                message = message.replace(secret, "***")
        # Kept formatted: the formatter would otherwise format the message a second time.
        record.msg, record.args = message, None
        return True


class Formatter(logging.Formatter):
    """FORMAT, with the date and time formatted once per second, not once per line: the
    request line is written for every request, and ``strftime`` was a fifth of its cost."""

    def __init__(self) -> None:
        super().__init__(FORMAT)
        self._second: tuple[int, str] = (-1, "")  # swapped whole: the ledger's thread logs too

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        second = int(record.created)
        cached = self._second
        if cached[0] != second:
            cached = self._second = (second, time.strftime(self.default_time_format, self.converter(record.created)))
        return self.default_msec_format % (cached[1], record.msecs)


def secrets_of(cfg: GatewayConfig) -> list[str]:
    values: list[str] = []
    for backend in cfg.backends.values():
        values.append(backend.api_key)
        values.extend(str(v) for v in backend.headers.values())
    return [v for v in values if v]


def setup_logging(cfg: GatewayConfig) -> list[logging.Handler]:
    """Install handlers on our loggers (not the root: library chatter stays out)."""
    # Every request writes a line, and FORMAT uses none of the caller's file, line, function,
    # thread or process: skip gathering them, as the logging HOWTO's "Optimization" section
    # says. Finding the caller walked the stack for each record; the request line cost about
    # 160k CPU instructions (tests/bench/instructions.py), 4% of a whole request.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
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
        handler.setFormatter(Formatter())
        handler.addFilter(scrub)
    for name in OUR_LOGGERS + ("aiohttp",):
        logger = logging.getLogger(name)
        logger.setLevel(level if name != "aiohttp" else max(level, logging.WARNING))
        for handler in handlers:
            logger.addHandler(handler)
        logger.propagate = False
    return handlers


@web.middleware
async def request_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    error = response.get(ERROR)  # set by the error middleware on every error it renders
    if error is not None and not request.get(LOGGED):
        log_refusal(request, response, error)
    return response


def log_refusal(request: web.Request, response: web.StreamResponse, error: dict[str, Any]) -> None:
    """The line of a request answered with ``error`` before the handler logged it."""
    status = response.status
    refused = status in REFUSALS or status >= 500
    level = logging.INFO if refused else logging.DEBUG
    outcome = "error" if status == 500 else "refused" if refused else "cancelled" if status == 499 else "rejected"
    log = logging.getLogger("gateway.request")
    if not log.isEnabledFor(level):
        return
    retry_after = response.headers.get("Retry-After")
    entry = {
        "id": request.get(REQUEST_ID), "status": outcome, "http_status": status,
        "code": error.get("code"), "param": error.get("param"),
        "retry_after_s": int(retry_after) if retry_after and retry_after.isdigit() else None,
        "client": request.get(CLIENT) or f"addr:{request.remote}", "path": request.path,
        # Refusal messages are the gateway's own words (which backend was skipped, and why);
        # input errors can quote what the client sent, so they stay out of the log.
        "reason": error.get("message") if refused else None,
    }
    log.log(level, "request %s", orjson.dumps({k: v for k, v in entry.items() if v is not None}).decode())
