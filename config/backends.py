"""The ``backends:`` section: any number of named upstreams, each in a tier.

    backends:
      spark-1:  {kind: llamacpp, base_url: "http://10.0.0.11:8080/v1"}            # tier local
      spark-2:  {kind: llamacpp, base_url: "http://10.0.0.12:8080/v1"}
      cerebras: {kind: cerebras, api_key: "${CEREBRAS_API_KEY}"}                  # tier cloud, order 0
      zai:      {kind: openai, base_url: "https://api.z.ai/api/paas/v4", model: glm-4.7,
                 api_key: "${ZAI_API_KEY}", order: 1}

An entry starts from its kind's preset (:data:`PRESETS`: llama-server on loopback, Cerebras with
GLM 4.7 and its prices, or a bare OpenAI-compatible API) and the keys it gives override it. The
tier defaults from the kind (llamacpp is local, the others cloud). Within a tier ``order`` ranks
the entries: the cloud tier is a chain tried in that order; local servers are chosen by
predicted time to first token and ``order`` only breaks ties. Names become metric labels and
model ids, so they are short and plain.
"""

from __future__ import annotations

import re

import attrs

from config.fields import field, http_url, non_empty, non_negative, one_of, positive

# Defined once: the wire dialects and the tiers. Code asks a backend its tier, never its name.
BACKEND_KINDS = ("llamacpp", "cerebras", "openai")
TIERS = ("local", "cloud")
NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")


@attrs.frozen
class BackendConfig:
    """One upstream. ``kind`` picks the wire dialect; everything else is data."""

    kind: str = field("openai", "Wire dialect: llamacpp, cerebras or openai (any OpenAI-compatible API).",
                      one_of(*BACKEND_KINDS))
    tier: str = field("cloud", "local (free, on your box) or cloud (paid): what routing, hedging, budgets and "
                      "savings treat it as.", one_of(*TIERS))
    order: int = field(0, "Rank within its tier: the cloud chain is tried in this order; local servers are "
                       "chosen by predicted time to first token, and this breaks ties. Equal ranks keep "
                       "config order.", non_negative)
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

# What an entry of each kind starts from before its own keys apply.
PRESETS = {"llamacpp": LOCAL_DEFAULT, "cerebras": CLOUD_DEFAULT, "openai": BackendConfig()}
# The two backends every config had before pools (and still has by default).
DEFAULT_BACKENDS = {"local": LOCAL_DEFAULT, "cloud": CLOUD_DEFAULT}


def preset_for(data: object) -> BackendConfig:
    """What a YAML entry is merged onto: its kind's preset (a bad kind is reported by the kind check)."""
    kind = data.get("kind") if isinstance(data, dict) else None
    return PRESETS.get(kind, PRESETS["openai"]) if isinstance(kind, str) else PRESETS["openai"]


def backend_name(name: str) -> str | None:
    if NAME.fullmatch(name):
        return None
    return (f"backend name {name!r} must be 1-32 characters of a-z, 0-9, '_', '.' or '-', starting with a letter "
            "or digit (it becomes a metric label and a model id)")
