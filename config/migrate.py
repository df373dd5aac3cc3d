"""Older config shapes, rewritten into today's before validation.

Configs that loaded once keep loading: each rule here recognises an older shape and rewrites it
into the current one, so ``check-config`` prints the new form. Rules never touch a config that
is already in the new shape.

- ``routing.classifier`` with keyword settings but no ``method`` (the keyword classifier was the
  only one before the learned scorer): ``method: keywords``, so a tuned keyword list keeps
  routing exactly as it did.
- ``backends`` with only the keys ``local`` and ``cloud`` and no ``tier`` in either (the two
  fixed roles before pools, issue #14): two named entries, ``local`` in the local tier and
  ``cloud`` in the cloud tier. Each was merged onto its role's default (llama-server, Cerebras)
  whatever its kind, and a role left out was there with its defaults; the rewrite keeps both,
  writing out the role-default values a different kind's preset would not give.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import attrs

from config.backends import DEFAULT_BACKENDS, PRESETS
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
    backends = data.get("backends")
    if _two_roles(backends):
        data = copy.deepcopy(dict(data))
        data["backends"] = {role: _role_entry(role, (backends or {}).get(role)) for role in DEFAULT_BACKENDS}
    return data


def _two_roles(backends: Any) -> bool:
    if backends is not None and not isinstance(backends, Mapping):
        return False  # not a shape we know: validation reports it
    entries = dict(backends or {})
    return (backends is not None and set(entries) <= set(DEFAULT_BACKENDS)
            and not any(isinstance(e, Mapping) and "tier" in e for e in entries.values()))


def _role_entry(role: str, given: Any) -> Any:
    if given is not None and not isinstance(given, Mapping):
        return given  # validation reports it at backends.<role>
    given = dict(given or {})
    default = DEFAULT_BACKENDS[role]
    kind = given.get("kind", default.kind)
    preset = PRESETS.get(kind) if isinstance(kind, str) else None
    # The role's default values where the kind's preset differs (a local vLLM, kind openai,
    # kept llama-server's context window and prefill), then what the config said.
    inherited = {} if preset is None else {
        k: v for k, v in attrs.asdict(default, recurse=False).items() if getattr(preset, k) != v}
    return {**inherited, "kind": kind, "tier": role, **given}
