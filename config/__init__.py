"""Gateway configuration: the schema (:mod:`config.schema`) and its YAML loader (:mod:`config.loader`).

This package stands alone: it imports nothing from ``gateway``, ``backends`` or ``routing``.
"""

from .loader import ConfigError, dump_yaml, load_config, parse_config, redacted, reference_rows
from .schema import (
    BACKEND_KINDS,
    CLOUD_DEFAULT,
    DEFAULT_BACKENDS,
    LOCAL_DEFAULT,
    PRESETS,
    TIERS,
    AuthConfig,
    BackendConfig,
    BudgetConfig,
    ClassifierConfig,
    EscalationConfig,
    GatewayConfig,
    GuardConfig,
    JudgeConfig,
    LedgerConfig,
    LimitsConfig,
    ListenConfig,
    LoggingConfig,
    ModelsConfig,
    RoutingConfig,
    ServerConfig,
)

__all__ = [
    "AuthConfig",
    "LimitsConfig",
    "BACKEND_KINDS",
    "CLOUD_DEFAULT",
    "LOCAL_DEFAULT",
    "BackendConfig",
    "DEFAULT_BACKENDS",
    "PRESETS",
    "TIERS",
    "BudgetConfig",
    "ClassifierConfig",
    "EscalationConfig",
    "GuardConfig",
    "JudgeConfig",
    "ConfigError",
    "GatewayConfig",
    "LedgerConfig",
    "ListenConfig",
    "LoggingConfig",
    "ModelsConfig",
    "RoutingConfig",
    "ServerConfig",
    "dump_yaml",
    "load_config",
    "parse_config",
    "redacted",
    "reference_rows",
]
