"""Upstream backends: one small class per wire dialect, plus simulators of each.

    from backends import BACKEND_KINDS
    cls = BACKEND_KINDS[cfg.kind]
    backend = cls("local", cfg, session)   # session from cls.make_session(), owned by the app
"""

from backends.base import HTTPBackend
from backends.cerebras import Cerebras
from backends.clock import Clock, ManualClock, SystemClock, as_clock
from backends.errors import (
    BackendError,
    BackendProtocolError,
    BackendRejected,
    BackendUnavailable,
    ContextOverflow,
)
from backends.events import Chunk, Health, Progress, RateLimit
from backends.llamacpp import LlamaCpp
from backends.openai_compatible import OpenAICompatible
from backends.protocol import Backend, Capabilities

BACKEND_KINDS: dict[str, type[HTTPBackend]] = {
    cls.kind: cls for cls in (LlamaCpp, Cerebras, OpenAICompatible)
}

__all__ = [
    "BACKEND_KINDS", "Backend", "BackendError", "BackendProtocolError", "BackendRejected", "BackendUnavailable",
    "Capabilities", "Cerebras", "Chunk", "Clock", "ContextOverflow", "HTTPBackend", "Health", "LlamaCpp",
    "ManualClock", "OpenAICompatible", "Progress", "RateLimit", "SystemClock", "as_clock",
]
