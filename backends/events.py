"""What a backend hands back: streamed chunks, prefill readings, rate-limit windows, health.

Plain values; readings travel with the chunks (``Chunk.progress``, ``Chunk.limits``) or errors
(``BackendError.limits``) that carried them, so the watchdog and the router's backend states read
them without poking at backend objects.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, NamedTuple

import attrs


class Progress(NamedTuple):
    """llama-server's ``prompt_progress`` while it processes the prompt (``return_progress``):
    ``processed`` counts the cached tokens too, so it reaches ``total`` when prefill ends."""

    total: int
    cache: int
    processed: int
    time_ms: float


class Chunk(NamedTuple):
    """One streamed ``chat.completion.chunk``.

    ``raw`` holds the upstream's JSON bytes when the backend did not change the event, so the
    relay can forward it without serialising again; ``None`` means "serialise ``data``".
    ``progress`` is a prefill reading the chunk carried; ``silent`` marks a chunk that only
    carried one, which the watchdog reads and the client, who did not ask for progress, never sees.
    ``limits``: on a response's first chunk, the rate-limit windows its headers reported.
    (A NamedTuple, not attrs: one is built per streamed token.)
    """

    data: dict[str, Any]
    raw: bytes | None = None
    progress: Progress | None = None
    silent: bool = False
    limits: Mapping[str, RateLimit] | None = None


class HeaderReadings(Mapping[str, "RateLimit"]):
    """A response's rate-limit windows, read from its headers when first looked at.

    The first chunk carries them, and routing looks after that chunk has gone to the client:
    parsing six ``x-ratelimit-*`` headers was the largest single step between the upstream's
    response headers and the client's first byte (issue #14, measured in the gateway)."""

    __slots__ = ("_read", "_headers", "_windows")

    def __init__(self, read: Callable[[Any], dict[str, RateLimit]], headers: Any) -> None:
        self._read, self._headers = read, headers
        self._windows: dict[str, RateLimit] | None = None

    def _parsed(self) -> dict[str, RateLimit]:
        if self._windows is None:
            self._windows = self._read(self._headers)
            self._headers = None
        return self._windows

    def __getitem__(self, window: str) -> RateLimit:
        return self._parsed()[window]

    def __iter__(self) -> Iterator[str]:
        return iter(self._parsed())

    def __len__(self) -> int:
        return len(self._parsed())


@attrs.frozen
class RateLimit:
    """One ``x-ratelimit-*`` window as last seen (``reset_s`` counts from ``seen_at``)."""

    limit: float | None
    remaining: float | None
    reset_s: float | None
    seen_at: float


@attrs.frozen
class Health:
    state: str  # "ok" | "loading" | "down" | "disabled"
    detail: str = ""
    checked_at: float = 0.0

    @property
    def ok(self) -> bool:
        return self.state == "ok"


def progress_chunk(data: dict[str, Any], raw: bytes, keep: bool) -> Chunk:
    """A chunk carrying ``prompt_progress``: the reading, and the chunk as the client gets it (the
    whole event if it asked for progress; else nothing, or what is left if more than a role)."""
    p = data["prompt_progress"] if keep else data.pop("prompt_progress")
    try:
        reading = Progress(int(p["total"]), int(p.get("cache") or 0), int(p["processed"]), float(p.get("time_ms") or 0))
    except (TypeError, KeyError, ValueError):
        reading = None  # malformed progress is no reason to fail a stream: it just isn't read
    if keep:
        return Chunk(data, raw, reading)
    choices = data.get("choices") or ()
    delta = choices[0].get("delta") if choices else None
    bare = not delta or set(delta) <= {"role", "content"} and not delta.get("content")
    return Chunk(data, None, reading, silent=bare and not (choices and choices[0].get("finish_reason")))
