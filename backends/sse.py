"""Incremental decoder for text/event-stream bodies.

Upstreams send ``data: {json}\\n\\n`` almost always, so the hot path is a ``find`` for the
blank line and a slice; the general SSE rules (CRLF/CR line ends, multi-line ``data``,
``event:`` fields, ``:`` comments) are handled off that path.
"""

from __future__ import annotations

from typing import NamedTuple


class SSEEvent(NamedTuple):
    data: bytes
    event: bytes = b""


class SSEDecoder:
    """Feed it raw body bytes, get back the complete events they finish.

    >>> d = SSEDecoder()
    >>> d.feed(b'data: {"a": 1}\\n\\ndata: [DO')
    [SSEEvent(data=b'{"a": 1}', event=b'')]
    >>> d.feed(b'NE]\\n\\n')
    [SSEEvent(data=b'[DONE]', event=b'')]
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            # A lone trailing \r may be the first half of \r\n in the next read.
            keep_cr = buf.endswith(b"\r")
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if keep_cr:
                buf = buf[:-1] + b"\r"
        events = []
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            block = buf[start:end]
            start = end + 2
            if block.startswith(b"data: ") and b"\n" not in block:
                events.append(SSEEvent(block[6:]))
            elif block:
                event = _parse_block(block)
                if event is not None:
                    events.append(event)
        self._buf = buf[start:]
        return events

    @property
    def pending(self) -> bytes:
        """Bytes of an unfinished event (non-empty at EOF means the stream was cut)."""
        return self._buf.strip()


def _parse_block(block: bytes) -> SSEEvent | None:
    data: list[bytes] = []
    event = b""
    for line in block.split(b"\n"):
        if not line or line.startswith(b":"):
            continue  # comments are keep-alives: alive, but not producing
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value
    if not data:
        return None
    return SSEEvent(b"\n".join(data), event)
