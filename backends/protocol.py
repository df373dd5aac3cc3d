"""The Backend protocol: what routing and the gateway may ask of an upstream, and nothing more.

Routing asks a backend what it can do (``caps``) and which tier it is in, never its name or
kind. What a backend measures (rate-limit headers, llama.cpp timings, prefill progress) comes
back as readings on its chunks and errors, never as state on the backend object.
:class:`backends.base.HTTPBackend` implements this for every OpenAI-compatible dialect;
tests implement it with scripted fakes.

    class Echo:                                    # a backend is any object of this shape
        name, tier = "echo", "local"
        cfg = BackendConfig(...)                    # timeouts the watchdog reads
        caps = Capabilities(context_window=8192, prefill=True)
        async def stream(self, body): yield Chunk({...})
        ...
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Mapping, Protocol, runtime_checkable

import attrs

from backends.events import Chunk, Health
from config.schema import BackendConfig


@attrs.frozen
class Capabilities:
    """What a backend declares it can do."""

    context_window: int
    prefill: bool = False  # continues a trailing assistant message
    images: bool = False  # accepts image_url parts
    tool_streaming: bool = True  # streams tool calls as deltas (the splice holds them until complete)
    progress: bool = False  # streams prefill progress (llama-server's return_progress)

    @classmethod
    def of(cls, cfg: BackendConfig, *, progress: bool = False) -> Capabilities:
        return cls(cfg.context_window, cfg.supports_prefill, cfg.supports_images, True, progress)


@runtime_checkable
class Backend(Protocol):
    name: str
    cfg: BackendConfig

    @property
    def tier(self) -> str: ...

    @property
    def caps(self) -> Capabilities: ...

    def stream(self, body: Mapping[str, Any]) -> AsyncIterator[Chunk]: ...

    async def complete(self, body: Mapping[str, Any]) -> dict[str, Any]: ...

    async def health(self) -> Health: ...

    async def models(self) -> list[dict[str, Any]]: ...

    def continuation_request(self, body: Mapping[str, Any], partial: str, prefill: bool,
                             prompt: str) -> dict[str, Any]: ...
