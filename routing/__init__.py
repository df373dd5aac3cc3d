"""Routing: pure decisions about which backend serves a request (see ``shared/design.md``)."""

from routing.decision import REASONS, RouteDecision, static_route

__all__ = ["REASONS", "RouteDecision", "static_route"]
