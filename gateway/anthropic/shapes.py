"""Small shared pieces of the Messages API's shape."""

from __future__ import annotations

from typing import Any


def kind_of(value: Any) -> str:
    """A JSON value's kind, as an error message names it."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")
