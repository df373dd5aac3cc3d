"""Route decisions: which backend serves a request, and why. Pure: no I/O, no clock.

    decision = static_route(pinned="cloud", default="local")
    decision.primary    # "cloud"
    decision.reason     # "pinned"
"""

from __future__ import annotations

import attrs

# Bounded set: these become metric labels and response headers.
REASONS = frozenset({"pinned", "default"})


@attrs.frozen
class RouteDecision:
    primary: str
    fallback: str | None
    reason: str

    def __attrs_post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown route reason {self.reason!r}")


def static_route(pinned: str | None, default: str) -> RouteDecision:
    """The model id pins a backend, or the configured default serves."""
    if pinned is not None:
        return RouteDecision(pinned, None, "pinned")
    return RouteDecision(default, None, "default")
