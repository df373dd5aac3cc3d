"""Older config shapes, rewritten into today's before validation.

Configs that loaded once keep loading: each rule here recognises an older shape and rewrites it
into the current one, so ``check-config`` prints the new form. Rules never touch a config that
is already in the new shape.

- ``routing.classifier`` with keyword settings but no ``method`` (the keyword classifier was the
  only one before the learned scorer): ``method: keywords``, so a tuned keyword list keeps
  routing exactly as it did.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from config.routing import KEYWORD_FIELDS


def migrate(data: Any) -> Any:
    """``data`` in the current shape (a copy if anything changed; the input is never mutated)."""
    if not isinstance(data, Mapping):
        return data
    routing = data.get("routing")
    classifier = routing.get("classifier") if isinstance(routing, Mapping) else None
    if isinstance(classifier, Mapping) and "method" not in classifier and any(k in classifier for k in KEYWORD_FIELDS):
        data = copy.deepcopy(dict(data))
        data["routing"]["classifier"] = {"method": "keywords", **classifier}
    return data
