"""Field helpers shared by the config sections: ``field()`` and the value checks."""

from __future__ import annotations

from typing import Any, Callable

import attrs

Check = Callable[[Any], "str | None"]

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


def field(default: Any, doc: str, check: Check | None = None, secret: bool = False,
          entries: tuple[type, Callable[[Any], Any]] | None = None) -> Any:
    """A config field. ``entries``: the field is a mapping of names to sections of a class, as
    ``(cls, base_of)``, where ``base_of(yaml mapping)`` is the instance an entry is merged onto."""
    meta = {"doc": doc, "check": check, "secret": secret, "entries": entries}
    if isinstance(default, (dict, list)):
        return attrs.field(factory=lambda: type(default)(default), metadata=meta)
    return attrs.field(default=default, metadata=meta)


def at_most(limit: float) -> Check:
    def check(value: float) -> str | None:
        if value <= 0:
            return f"must be > 0 (got {value!r})"
        return None if value <= limit else f"must be <= {limit} (got {value!r})"

    return check


def fraction(value: float) -> str | None:
    return None if 0 <= value < 1 else f"must be a fraction in [0, 1) (got {value!r})"
