"""Routing: which backend serves a request, and what happens when one fails.

Where to look:

- the decision, pure: ``features`` -> ``classifier`` (``scorer``, ``judge``) -> ``escalation``
  -> ``policy.decide`` over ``state`` (the backends as routing sees them, tiers and speeds);
- what to do when an attempt fails, pure: ``flow.Flow``;
- the one async piece, the supervisor: ``supervisor.Supervision`` runs a request under the
  watchdog (``watch``), splices streams (``splice``) and yields the typed events of ``events``;
- ``router.Router`` wires them and keeps the state between requests.

Pure parts take plain values and an explicit ``now``; the clock is injected.
"""

from routing.classifier import Classification, Classifier
from routing.errors import NoBackendAvailable, RoutingError
from routing.events import Event, Failed, Finished, Hedged, Outcome, Serving, Started, Switched, Usage
from routing.features import Features, extract_features
from routing.policy import REASONS, NoRoute, RouteDecision, decide
from routing.router import Route, Router
from routing.tokens import TokenCounter

__all__ = [
    "REASONS", "Classification", "Classifier", "Event", "Failed", "Features", "Finished", "Hedged",
    "NoBackendAvailable", "NoRoute", "Outcome", "Route", "RouteDecision", "Router", "RoutingError", "Serving",
    "Started", "Switched", "TokenCounter", "Usage", "decide", "extract_features",
]
