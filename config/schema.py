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

from typing import Any, Callable

import attrs

Check = Callable[[Any], "str | None"]

BACKEND_KINDS = ("llamacpp", "cerebras", "openai")
ROLES = ("local", "cloud")
LOG_LEVELS = ("debug", "info", "warning", "error")


def positive(value: float) -> str | None:
    return None if value > 0 else f"must be > 0 (got {value!r})"


def non_negative(value: float) -> str | None:
    return None if value >= 0 else f"must be >= 0 (got {value!r})"


def port(value: int) -> str | None:
    return None if 1 <= value <= 65535 else f"must be a TCP port 1-65535 (got {value!r})"


def one_of(*allowed: str) -> Check:
    def check(value: str) -> str | None:
        if value in allowed:
            return None
        return f"must be one of {', '.join(allowed)} (got {value!r})"

    return check


def http_url(value: str) -> str | None:
    if value.startswith(("http://", "https://")) and len(value) > len("https://"):
        return None
    return f"must be an http:// or https:// URL (got {value!r})"


def non_empty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def field(default: Any, doc: str, check: Check | None = None, secret: bool = False) -> Any:
    meta = {"doc": doc, "check": check, "secret": secret}
    if isinstance(default, (dict, list)):
        return attrs.field(factory=lambda: type(default)(default), metadata=meta)
    return attrs.field(default=default, metadata=meta)


@attrs.frozen
class ListenConfig:
    host: str = field("127.0.0.1", "Address the gateway binds to.", non_empty)
    port: int = field(8000, "TCP port the gateway listens on.", port)


@attrs.frozen
class BackendConfig:
    """One upstream. ``kind`` picks the wire dialect; everything else is data."""

    kind: str = field("openai", "Wire dialect: llamacpp, cerebras or openai (any OpenAI-compatible API).",
                      one_of(*BACKEND_KINDS))
    base_url: str = field("", "Base URL including /v1.", http_url)
    model: str = field("", "Model id sent upstream (model ids are config, never code).", non_empty)
    api_key: str = field("", "Bearer key for the upstream; use ${ENV_VAR} interpolation.", secret=True)
    enabled: bool = field(True, "Set false to take this backend out of service.")
    connect_timeout_s: float = field(5.0, "TCP/TLS connect timeout.", positive)
    read_timeout_s: float = field(600.0, "Longest silence on the socket before the request fails.", positive)
    context_window: int = field(131072, "Tokens of context the upstream model holds.", positive)
    max_output_tokens: int = field(0, "Cap on max_tokens sent upstream; 0 means no cap.", non_negative)
    supports_prefill: bool = field(False, "Continues a trailing assistant message (true prefill).")
    supports_images: bool = field(False, "Accepts image_url content parts.")
    health_interval_s: float = field(5.0, "Seconds between background health probes.", positive)
    headers: dict = field({}, "Extra HTTP headers sent upstream (e.g. X-Cerebras-3rd-Party-Integration).")


LOCAL_DEFAULT = BackendConfig(
    kind="llamacpp",
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
    read_timeout_s=120.0,
    # Probing lists models; every 30 s is plenty for a cloud and spares its request quota.
    health_interval_s=30.0,
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
class RoutingConfig:
    default_backend: str = field("local", "Backend for the routed id until routing rules apply.",
                                 one_of(*ROLES))


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
    backends: BackendsConfig = field(BackendsConfig(), "Upstreams by role.")
    models: ModelsConfig = field(ModelsConfig(), "Model ids served on /v1/models.")
    routing: RoutingConfig = field(RoutingConfig(), "How requests pick a backend.")
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
        if not self.backend(self.routing.default_backend).enabled:
            problems.append(("routing.default_backend",
                             f"names backend {self.routing.default_backend!r}, which is disabled"))
        if not (self.backends.local.enabled or self.backends.cloud.enabled):
            problems.append(("backends", "at least one backend must be enabled"))
        return problems
