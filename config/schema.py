"""The configuration model: frozen attrs classes, one per YAML section.

Every field may carry metadata the loader understands:

- ``check``: a callable ``value -> str | None``; a string is the problem, reported by YAML path.
- ``secret``: the value is redacted by :func:`config.redacted`.
- ``doc``: one line for the config reference.

A nested section whose default is an instance (``routing.guard``) is *merged*: keys the YAML
leaves out keep that instance's values. ``backends`` is a mapping of named entries, each merged
onto its kind's preset (:mod:`config.backends`); the two-key shape of older configs is migrated
(:mod:`config.migrate`).

Nothing here reads files or the environment; see :mod:`config.loader`.
"""

from __future__ import annotations

import fnmatch

import attrs

from config.backends import (  # noqa: F401  (re-exported)
    BACKEND_KINDS,
    CLOUD_DEFAULT,
    DEFAULT_BACKENDS,
    LOCAL_DEFAULT,
    PRESETS,
    TIERS,
    BackendConfig,
    backend_name,
    preset_for,
)
from config.fields import field, fraction, non_empty, non_negative, one_of, port, positive
from config.routing import (  # noqa: F401  (re-exported: the routing section lives in its own module)
    STRATEGIES,
    ClassifierConfig,
    EscalationConfig,
    GuardConfig,
    JudgeConfig,
    RoutingConfig,
)

LOG_LEVELS = ("debug", "info", "warning", "error")
# Claude Code asks for claude-* ids: its small model (haiku) for background work (titles, topic
# checks, the quota probe), which is cheap and latency-bound, and its main model for the work.
DEFAULT_ALIASES = {"claude-*haiku*": "local_first", "claude-*": "auto"}
ALIAS_TARGETS = ("auto", "local", "cloud")


def alias_map(value: dict) -> str | None:
    for pattern, target in value.items():
        if not isinstance(pattern, str) or not pattern.strip():
            return f"alias patterns must be non-empty strings (got {pattern!r})"
        if not isinstance(target, str) or not target.strip():
            return f"{pattern}: the target must be a string: auto, local, cloud, a strategy or a backend name"
    return None


LOOPBACK = ("127.", "::1", "localhost")


@attrs.frozen
class ListenConfig:
    host: str = field("127.0.0.1", "Address the gateway binds to.", non_empty)
    port: int = field(8000, "TCP port the gateway listens on.", port)
    allow_open_bind: bool = field(False, "Allow a non-loopback bind with no auth.keys (a deliberate choice).")

    @property
    def loopback(self) -> bool:
        return self.host.startswith(LOOPBACK) or self.host == "[::1]"


@attrs.frozen
class AuthConfig:
    """Gateway access keys: when any is set, /v1/* needs ``Authorization: Bearer <key>``."""

    keys: tuple = field((), "Accepted gateway keys; use ${ENV_VAR}. Empty entries are ignored.", secret=True)
    protect_health: bool = field(False, "Require a key for /health too.")
    protect_metrics: bool = field(False, "Require a key for /metrics too.")

    @property
    def active_keys(self) -> tuple[str, ...]:
        return tuple(k for k in self.keys if k)


@attrs.frozen
class LimitsConfig:
    """Caps that protect the gateway and the owner's cloud budget; each answers 4xx or 429."""

    max_messages: int = field(5000, "Most messages one request may carry.", positive)
    max_prompt_chars: int = field(8_000_000, "Most characters of message text one request may carry.", positive)
    max_streams: int = field(512, "Concurrent streaming requests, all clients together.", positive)
    max_streams_per_key: int = field(64, "Concurrent streaming requests per gateway key (or per client address).",
                                     positive)
    requests_per_minute_per_key: int = field(600, "Requests per minute per gateway key (or client address).",
                                             positive)


@attrs.frozen
class ModelsConfig:
    """The model ids clients may ask for.

    Cline picks its tool protocol from the id: ids containing ``glm-4.7`` get the GLM/XML-tools
    prompt, which is what GLM 4.7 on both backends expects, so every default contains it.
    """

    routed: str = field("glm-4.7", "Id that lets the gateway choose the backend; `<routed>@<name>` pins one "
                        "backend by name.", non_empty)
    local: str = field("glm-4.7-local", "Id that pins the local tier (its fastest server).", non_empty)
    cloud: str = field("glm-4.7-cloud", "Id that pins the cloud tier (its chain).", non_empty)
    aliases: dict = field(DEFAULT_ALIASES, "Other ids clients ask for, as glob -> target: auto (routed), local or "
                          "cloud (pins a tier), a strategy (local_first...), or a backend name. First match wins; "
                          "the ids above always win.", alias_map)

    def alias(self, model: str) -> str | None:
        """Where an id that is not one of ours goes, by the first alias pattern it matches."""
        for pattern, target in self.aliases.items():
            if fnmatch.fnmatchcase(model, pattern):
                return target
        return None


@attrs.frozen
class BudgetConfig:
    """Cloud spend caps over UTC days and months; at a cap the cloud is treated as unavailable."""

    daily_usd: float = field(0.0, "Cloud spend cap per UTC day; 0 = no cap.", non_negative)
    monthly_usd: float = field(0.0, "Cloud spend cap per UTC month; 0 = no cap.", non_negative)
    alert_fraction: float = field(0.8, "Log a warning (and flag /health) once this share of a cap is spent.",
                                  fraction)


@attrs.frozen
class LedgerConfig:
    path: str = field("data/ledger.sqlite3", "SQLite ledger: one row per finished request (WAL mode).",
                      non_empty)


@attrs.frozen
class ServerConfig:
    max_body_bytes: int = field(10 * 1024 * 1024, "Largest request body accepted (Cline sends base64 images).",
                                positive)
    keepalive_s: float = field(10.0, "Longest silence on an open stream before a keep-alive goes out (a slow "
                                     "first token, a pause mid-answer).", positive)
    shutdown_grace_s: float = field(10.0, "Time in-flight streams get to finish on SIGTERM.", non_negative)


@attrs.frozen
class LoggingConfig:
    level: str = field("info", "Log level: debug, info, warning or error.", one_of(*LOG_LEVELS))
    file: str = field("logs/gateway.log", "Rotating log file; empty disables file logging.")
    max_bytes: int = field(10 * 1024 * 1024, "Size at which the log file rotates.", positive)
    backups: int = field(5, "Rotated files kept.", non_negative)
    log_bodies: bool = field(False, "Log request/response bodies at debug level (off: they hold your code).")


@attrs.frozen
class GatewayConfig:
    listen: ListenConfig = field(ListenConfig(), "Where the gateway listens.")
    auth: AuthConfig = field(AuthConfig(), "Who may use the gateway.")
    limits: LimitsConfig = field(LimitsConfig(), "Request and concurrency caps.")
    backends: dict = field(dict(DEFAULT_BACKENDS), "Upstreams by name, each with its tier (config.backends).",
                           entries=(BackendConfig, preset_for))
    models: ModelsConfig = field(ModelsConfig(), "Model ids served on /v1/models.")
    routing: RoutingConfig = field(RoutingConfig(), "How requests pick a backend.")
    budget: BudgetConfig = field(BudgetConfig(), "Cloud spend caps.")
    ledger: LedgerConfig = field(LedgerConfig(), "Where accounting is kept.")
    server: ServerConfig = field(ServerConfig(), "HTTP server limits and timing.")
    logging: LoggingConfig = field(LoggingConfig(), "Logging.")

    def backend(self, name: str) -> BackendConfig:
        return self.backends[name]

    def enabled_backends(self) -> dict[str, BackendConfig]:
        """The backends in service, in config order."""
        return {name: b for name, b in self.backends.items() if b.enabled}

    def tier(self, tier: str) -> list[str]:
        """The enabled backends of ``tier``, by ``order`` (config order among equals)."""
        members = [(b.order, i, name) for i, (name, b) in enumerate(self.backends.items())
                   if b.enabled and b.tier == tier]
        return [name for _, _, name in sorted(members)]

    def model_ids(self) -> dict[str, tuple[str, str] | None]:
        """Model id -> what it pins, ``("tier", tier)`` or ``("backend", name)``, or None (routed)."""
        ids: dict[str, tuple[str, str] | None] = {self.models.routed: None, self.models.local: ("tier", "local"),
                                                  self.models.cloud: ("tier", "cloud")}
        for name in self.backends:
            ids.setdefault(f"{self.models.routed}@{name}", ("backend", name))
        return ids

    def cross_checks(self) -> list[tuple[str, str]]:
        """Problems no single field can see, as (yaml path, message)."""
        problems = []
        ids = [self.models.routed, self.models.local, self.models.cloud]
        if len(set(ids)) != len(ids):
            problems.append(("models", f"routed, local and cloud ids must differ (got {ids})"))
        for name, b in self.backends.items():
            if (why := backend_name(name)) is not None:
                problems.append((f"backends.{name}", why))
            for key in ("base_url", "model"):
                if not getattr(b, key):
                    problems.append((f"backends.{name}.{key}", f"required (no default for kind {b.kind})"))
        for pattern, target in self.models.aliases.items():
            if target not in (*ALIAS_TARGETS, *STRATEGIES) and target not in self.backends:
                problems.append((f"models.aliases.{pattern}", f"{target!r} is not auto, local, cloud, a strategy "
                                 f"({', '.join(STRATEGIES)}) or a backend ({', '.join(self.backends)})"))
        only = {"local_only": "local", "cloud_only": "cloud"}.get(self.routing.strategy)
        if only and not self.tier(only):
            problems.append(("routing.strategy", f"is {self.routing.strategy}, but no {only} backend is enabled"))
        judge = self.routing.judge
        if judge.enabled and judge.backend not in TIERS and judge.backend not in self.enabled_backends():
            problems.append(("routing.judge.backend", f"{judge.backend!r} is neither a tier (local, cloud) nor an "
                             f"enabled backend ({', '.join(self.enabled_backends())})"))
        if not self.listen.loopback and not self.auth.active_keys and not self.listen.allow_open_bind:
            problems.append(("listen.host", f"{self.listen.host} is reachable from other machines and no auth.keys "
                             "are set: anyone could spend your cloud budget. Set auth.keys, or set "
                             "listen.allow_open_bind: true to do this deliberately"))
        if not self.enabled_backends():
            problems.append(("backends", "at least one backend must be enabled"))
        return problems
