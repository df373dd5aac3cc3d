"""Rate-limit readings ride on a response's first chunk and are parsed only when routing reads
them, after that chunk has gone to the client (issue #14: the parse was the largest step between
the upstream's headers and the client's first byte)."""

from __future__ import annotations

from backends import RateLimit
from backends.events import HeaderReadings


def test_readings_are_parsed_once_and_only_when_read():
    calls = []

    def read(headers):
        calls.append(headers)
        return {"tokens-minute": RateLimit(60_000.0, float(headers["remaining"]), 3.0, 1.0)}

    readings = HeaderReadings(read, {"remaining": "59000"})
    assert calls == []  # carried on the chunk, not parsed yet
    limits: dict[str, RateLimit] = {}
    limits.update(readings)  # what BackendStates.observe_limits does
    assert limits["tokens-minute"].remaining == 59_000.0 and len(readings) == 1 and list(readings) == ["tokens-minute"]
    assert len(calls) == 1  # once, however often it is read
