"""Routing: which backend serves a request, and fallback before the first byte.

Pure parts (``features``, ``classifier``, ``policy``, ``state``) take plain values and an
explicit ``now``; :class:`routing.router.Router` is the one async piece.
"""

from routing.classifier import Classification, Classifier
from routing.errors import NoBackendAvailable, RoutingError
from routing.features import Features, extract_features
from routing.policy import REASONS, NoRoute, RouteDecision, decide
from routing.router import Route, Router
from routing.tokens import TokenCounter

__all__ = [
    "REASONS", "Classification", "Classifier", "Features", "NoBackendAvailable", "NoRoute", "Route",
    "RouteDecision", "Router", "RoutingError", "TokenCounter", "decide", "extract_features",
]
