"""The configuration model: frozen attrs classes, one per YAML section.

Every field may carry metadata the loader understands:

- ``check``: a callable ``value -> str | None``; a string is the problem, reported by YAML path.
- ``secret``: the value is redacted by :func:`config.redacted`.
- ``doc``: one line for the config reference.

A nested section whose default is an instance (``backends.cloud``) is *merged*: keys the YAML
leaves out keep that instance's values, so ``backends: {cloud: {api_key: ...}}`` is a full
Cerebras backend.

Nothing here reads files or the environment; see :mod:`config.loader`.
"""

from __future__ import annotations

import attrs

from config.fields import field, fraction, http_url, non_empty, non_negative, one_of, port, positive
from config.routing import (  # noqa: F401  (re-exported: the routing section lives in its own module)
    STRATEGIES,
    ClassifierConfig,
    EscalationConfig,
    GuardConfig,
    JudgeConfig,
    RoutingConfig,
)

BACKEND_KINDS = ("llamacpp", "cerebras", "openai")
ROLES = ("local", "cloud")
TIERS = ("local", "cloud")
LOG_LEVELS = ("debug", "info", "warning", "error")


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
class BackendConfig:
    """One upstream. ``kind`` picks the wire dialect; everything else is data."""

    kind: str = field("openai", "Wire dialect: llamacpp, cerebras or openai (any OpenAI-compatible API).",
                      one_of(*BACKEND_KINDS))
    tier: str = field("cloud", "local (free, on your box) or cloud (paid): what routing, hedging, budgets and "
                      "savings treat it as.", one_of(*TIERS))
    base_url: str = field("", "Base URL including /v1.", http_url)
    model: str = field("", "Model id sent upstream (model ids are config, never code).", non_empty)
    api_key: str = field("", "Bearer key for the upstream; use ${ENV_VAR} interpolation.", secret=True)
    enabled: bool = field(True, "Set false to take this backend out of service.")
    connect_timeout_s: float = field(5.0, "TCP/TLS connect timeout.", positive)
    headers_timeout_s: float = field(120.0, "Time from sending a request to the upstream's response headers.",
                                     positive)
    read_timeout_s: float = field(600.0, "Longest silence on the socket before the request fails.", positive)
    first_token_timeout_s: float = field(
        30.0, "Request sent -> first content/reasoning/tool-call delta; else fail over.", positive)
    stall_timeout_s: float = field(10.0, "Longest gap between deltas before the stream counts as stalled.",
                                   positive)
    context_window: int = field(131072, "Tokens of context the upstream model holds.", positive)
    max_output_tokens: int = field(0, "Cap on max_tokens sent upstream; 0 means no cap.", non_negative)
    supports_prefill: bool = field(False, "Continues a trailing assistant message (true prefill).")
    supports_images: bool = field(False, "Accepts image_url content parts.")
    health_interval_s: float = field(5.0, "Seconds between background health probes.", positive)
    price_input_per_mtok: float = field(0.0, "USD per 1M prompt tokens (not cached).", non_negative)
    price_output_per_mtok: float = field(0.0, "USD per 1M completion tokens (reasoning included).", non_negative)
    price_cached_input_per_mtok: float = field(0.0, "USD per 1M cached prompt tokens.", non_negative)
    headers: dict = field({}, "Extra HTTP headers sent upstream (e.g. X-Cerebras-3rd-Party-Integration).")


LOCAL_DEFAULT = BackendConfig(
    kind="llamacpp",
    tier="local",
    base_url="http://127.0.0.1:8080/v1",
    model="local",
    context_window=65536,
    supports_prefill=True,
)

CLOUD_DEFAULT = BackendConfig(
    kind="cerebras",
    base_url="https://api.cerebras.ai/v1",
    model="zai-glm-4.7",
    context_window=131072,
    # Cerebras reserves rate-limit budget for prompt + max_completion_tokens up front and
    # caps GLM 4.7 output at 40k; 16k is what Cerebras staff recommend for coding tools.
    max_output_tokens=16000,
    headers_timeout_s=30.0,
    read_timeout_s=120.0,
    stall_timeout_s=15.0,
    # Probing lists models; every 30 s is plenty for a cloud and spares its request quota.
    health_interval_s=30.0,
    # zai-glm-4.7 list price; Cerebras prompt caching is enterprise-only, so cached = input.
    price_input_per_mtok=2.25,
    price_output_per_mtok=2.75,
    price_cached_input_per_mtok=2.25,
)


@attrs.frozen
class BackendsConfig:
    local: BackendConfig = field(LOCAL_DEFAULT, "The local llama.cpp server.")
    cloud: BackendConfig = field(CLOUD_DEFAULT, "The paid cloud (Cerebras by default).")


@attrs.frozen
class ModelsConfig:
    """The model ids clients may ask for.

    Cline picks its tool protocol from the id: ids containing ``glm-4.7`` get the GLM/XML-tools
    prompt, which is what GLM 4.7 on both backends expects, so every default contains it.
    """

    routed: str = field("glm-4.7", "Id that lets the gateway choose the backend.", non_empty)
    local: str = field("glm-4.7-local", "Id that pins the local backend.", non_empty)
    cloud: str = field("glm-4.7-cloud", "Id that pins the cloud backend.", non_empty)


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
    keepalive_s: float = field(10.0, "SSE keep-alive comment interval while a slow first token is pending.",
                               positive)
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
    backends: BackendsConfig = field(BackendsConfig(), "Upstreams by role.")
    models: ModelsConfig = field(ModelsConfig(), "Model ids served on /v1/models.")
    routing: RoutingConfig = field(RoutingConfig(), "How requests pick a backend.")
    budget: BudgetConfig = field(BudgetConfig(), "Cloud spend caps.")
    ledger: LedgerConfig = field(LedgerConfig(), "Where accounting is kept.")
    server: ServerConfig = field(ServerConfig(), "HTTP server limits and timing.")
    logging: LoggingConfig = field(LoggingConfig(), "Logging.")

    def backend(self, role: str) -> BackendConfig:
        return getattr(self.backends, role)

    def model_ids(self) -> dict[str, str | None]:
        """Model id -> pinned role, or None for the routed id."""
        return {self.models.routed: None, self.models.local: "local", self.models.cloud: "cloud"}

    def cross_checks(self) -> list[tuple[str, str]]:
        """Problems no single field can see, as (yaml path, message)."""
        problems = []
        ids = [self.models.routed, self.models.local, self.models.cloud]
        if len(set(ids)) != len(ids):
            problems.append(("models", f"routed, local and cloud ids must differ (got {ids})"))
        only = {"local_only": "local", "cloud_only": "cloud"}.get(self.routing.strategy)
        if only and not self.backend(only).enabled:
            problems.append(("routing.strategy", f"is {self.routing.strategy}, but backend {only!r} is disabled"))
        if not self.listen.loopback and not self.auth.active_keys and not self.listen.allow_open_bind:
            problems.append(("listen.host", f"{self.listen.host} is reachable from other machines and no auth.keys "
                             "are set: anyone could spend your cloud budget. Set auth.keys, or set "
                             "listen.allow_open_bind: true to do this deliberately"))
        for role in ROLES:
            if self.backend(role).tier != role:
                # Until backends are pools (named entries in tiers, issue #14) each role is its tier.
                problems.append((f"backends.{role}.tier", f"must be {role!r} for the {role} backend"))
        if not (self.backends.local.enabled or self.backends.cloud.enabled):
            problems.append(("backends", "at least one backend must be enabled"))
        return problems
