"""llama.cpp's ``llama-server``.

Wire facts (``shared/protocols.md`` §2 and §8): OpenAI chunks with ``reasoning_content``,
usage in a separate ``choices: []`` chunk with ``timings``, unknown request fields accepted,
``/health`` answers 503 while the model loads, and after every *streamed* response the server
closes the TCP connection although it advertised keep-alive.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import aiohttp
import orjson

from backends.base import HTTPBackend, translate_errors
from backends.errors import BackendError
from backends.events import Health


class LlamaCpp(HTTPBackend):
    """A local llama-server. ``base_url`` ends in ``/v1``; health and props live at the root.

    >>> LlamaCpp("local", cfg, session)._root
    'http://127.0.0.1:8080'
    """

    kind: ClassVar[str] = "llamacpp"
    reports_progress: ClassVar[bool] = True

    @classmethod
    def make_session(cls) -> aiohttp.ClientSession:
        # llama-server closes the connection after every streamed response although it said
        # Keep-Alive (protocols.md §8). aiohttp pools a socket as soon as it has read the body's
        # end, before our _finish_stream can drop it, so under concurrency other requests were
        # handed sockets the server was closing, and the one retry below could draw another: a
        # local request then fell back to the cloud (the routing-quality bench saw 0-14 of 179 at
        # 8 in flight), and stickiness kept its conversation there. "Connection: close" on every
        # request means no socket is ever pooled; a stream needed a new connection anyway.
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        return aiohttp.ClientSession(connector=connector)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._root = self._url[:-3] if self._url.endswith("/v1") else self._url

    def upstream_body(self, body: Mapping[str, Any], stream: bool) -> dict[str, Any]:
        out = super().upstream_body(body, stream)
        if out.get("reasoning_effort") == "none":
            # llama-server knows no reasoning_effort; "none" (an Anthropic request without
            # thinking, say) is its template's enable_thinking switch.
            del out["reasoning_effort"]
            out["chat_template_kwargs"] = {**(body.get("chat_template_kwargs") or {}), "enable_thinking": False}
        return out

    async def _post(self, payload: dict[str, Any], timeout: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
        try:
            return await super()._post(payload, timeout)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            if isinstance(exc, aiohttp.ClientConnectorError):
                raise  # refused/unreachable: a fresh connection failed, nothing to retry
            # The connection died before any byte of a response came back (with pooling, the
            # socket llama-server had closed, protocols.md §8; make_session now pools none):
            # nothing was generated, so one retry on a new socket is safe.
            return await super()._post(payload, timeout)

    def continuation_request(self, body: Mapping[str, Any], partial: str, prefill: bool,
                             prompt: str) -> dict[str, Any]:
        # llama-server refuses a prefill while the template thinks ("Assistant response prefill is
        # incompatible with enable_thinking", protocols.md §2.6), and knows no reasoning_effort.
        out = super().continuation_request(body, partial, prefill, prompt)
        out.pop("reasoning_effort", None)
        if prefill:
            out["chat_template_kwargs"] = {**(body.get("chat_template_kwargs") or {}), "enable_thinking": False}
        return out

    def _finish_stream(self, resp: aiohttp.ClientResponse, complete: bool) -> None:
        # llama-server closes the connection after every stream (protocols.md §8).
        resp.close()

    async def health(self) -> Health:
        try:
            with translate_errors(self):
                async with self.session.get(f"{self._root}/health", headers=self._headers,
                                            timeout=self._timeout) as resp:
                    body = await resp.read()
        except BackendError as exc:
            return Health("down", exc.message, self.clock())
        if resp.status == 200:
            return Health("ok", "", self.clock())
        if resp.status == 503:
            return Health("loading", _error_message(body) or "loading model", self.clock())
        return Health("down", f"/health answered HTTP {resp.status}", self.clock())

    async def context_limit(self) -> int | None:
        """Per-slot context of the running server (``-c`` divided among ``-np`` slots)."""
        try:
            props = await self.props()
        except BackendError:
            return None
        n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx")
        return n_ctx if isinstance(n_ctx, int) and n_ctx > 0 else None

    async def slots(self) -> tuple[int, int] | None:
        """``/slots``: how many of the server's slots are generating, for anyone (other clients
        of the same llama-server too). None if the endpoint is off (``--no-slots``)."""
        try:
            with translate_errors(self):
                async with self.session.get(f"{self._root}/slots", headers=self._headers,
                                            timeout=self._timeout) as resp:
                    await self._check(resp)
                    slots = orjson.loads(await resp.read())
        except (BackendError, orjson.JSONDecodeError):
            return None
        if not isinstance(slots, list):
            return None
        return sum(1 for s in slots if isinstance(s, dict) and s.get("is_processing")), len(slots)

    async def props(self) -> dict[str, Any]:
        """``/props``: n_ctx, slot count and chat template of the running server."""
        with translate_errors(self):
            async with self.session.get(f"{self._root}/props", headers=self._headers,
                                        timeout=self._timeout) as resp:
                await self._check(resp)
                data = orjson.loads(await resp.read())
        return data if isinstance(data, dict) else {}


def _error_message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    err = data.get("error") if isinstance(data, dict) else None
    return str(err.get("message", "")) if isinstance(err, dict) else ""
