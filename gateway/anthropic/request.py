"""Anthropic Messages requests: checked as Anthropic checks them, then translated to the
gateway's internal form (an OpenAI Chat Completions body), which routing and every backend speak.

    msg = parse_messages_request(raw, content_type, limits)   # InvalidRequest names the path
    msg.body        # the internal body: routing.features, the supervisor and backends read it
    msg.model, msg.stream, msg.thinking

The translation, block by block:

- ``system`` (a string or text blocks) becomes the first system message. Claude Code's
  ``x-anthropic-billing-header`` block is dropped: it changes on every request (its ``cch``),
  which would defeat llama.cpp's prefix cache and the conversation key, and only Anthropic's
  billing reads it. ``cache_control`` is accepted and ignored (llama.cpp caches by itself).
- ``text`` and ``image`` blocks become content parts; ``thinking`` becomes the assistant's
  ``reasoning_content`` (each backend renames it as its API wants); ``redacted_thinking`` is
  opaque to every model but Claude's and is left out.
- ``tool_use`` becomes an assistant ``tool_calls`` entry; each ``tool_result`` becomes a
  ``role: "tool"`` message, placed right after the assistant turn as OpenAI requires, before the
  user's other blocks. A result with ``is_error: true`` is wrapped in ``<tool_use_error>``: an
  OpenAI model cannot see the flag, and Claude Code marks its own tool errors the same way.
- ``tool_choice`` ``auto|any|tool|none`` become ``auto|required|{function}|none``;
  ``disable_parallel_tool_use`` becomes ``parallel_tool_calls: false``.
- ``thinking`` enabled lets the model reason (its budget picks ``reasoning_effort``); without it
  the model is asked not to, as Claude would not.
- A final assistant message is a prefill, which llama.cpp continues (and echoes in its first
  delta, protocols.md §8); the answer is its continuation only (:mod:`gateway.anthropic.wire`).
"""

from __future__ import annotations

from typing import Any

import attrs
import orjson

from config.schema import LimitsConfig
from gateway.anthropic.options import output_config, sampling, thinking_effort, tool_choice, tools_of
from gateway.errors import InvalidRequest
from gateway.validation import check_size, json_object
from gateway.validation import kind_of as _kind

BILLING_HEADER = "x-anthropic-billing-header:"
TOOL_ERROR = "<tool_use_error>"
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
USER_BLOCKS = frozenset({"text", "image", "tool_result", "document"})
ASSISTANT_BLOCKS = frozenset({"text", "tool_use", "thinking", "redacted_thinking"})
RESULT_BLOCKS = frozenset({"text", "image", "document", "search_result", "tool_reference"})
# What the request's fields do here. Translated: model, max_tokens, messages, system, stream,
# tools, tool_choice, thinking, stop_sequences, temperature, top_p, top_k, metadata and
# output_config. Accepted and ignored, because they steer Anthropic's platform and not what the
# answer says (and a Claude Code update that starts sending one must not break it):
PLATFORM = frozenset({"service_tier", "speed", "inference_geo", "diagnostics", "cache_control", "container",
                      "workspace_id", "user_profile_id", "billing_policy", "fallback_credit_token", "betas",
                      # Anthropic's server-side clearing of old tool results and compaction: the
                      # backends get the whole context instead, which changes no answer's meaning.
                      "context_management", "compaction", "thread", "fallbacks"})
KNOWN = frozenset({"model", "max_tokens", "messages", "system", "stop_sequences", "stream", "temperature", "top_p",
                   "top_k", "metadata", "tools", "tool_choice", "thinking", "output_config", "mcp_servers",
                   *PLATFORM})


@attrs.frozen
class MessagesRequest:
    body: dict[str, Any]  # the internal (OpenAI-shaped) request
    model: str
    stream: bool
    thinking: bool
    non_text_parts: frozenset[str] = frozenset()
    # Anthropic's max_tokens is required, and Claude Code sends its model's whole output
    # ceiling: routing checks context fit with its answer reserve instead (Router.route).
    max_tokens_is_ceiling: bool = True
    # A final assistant message is a prefill: Anthropic answers with its continuation only.
    prefill: str = ""


def parse_messages_request(raw: bytes, content_type: str | None, limits: LimitsConfig | None = None,
                           *, counting: bool = False) -> MessagesRequest:
    """``counting``: a ``count_tokens`` body, which has no ``max_tokens``."""
    req = json_object(raw, content_type)
    for key in req:
        if key not in KNOWN:
            raise InvalidRequest(f"{key}: Extra inputs are not permitted")
    model = _required(req, "model", str)
    if not model.strip():
        raise InvalidRequest("model: must not be empty")
    max_tokens = None
    if not counting:
        max_tokens = _required(req, "max_tokens", int)
        if max_tokens < 1:
            raise InvalidRequest(f"max_tokens: must be at least 1 (got {max_tokens})")
    stream = req.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest(f"stream: Input should be a valid boolean (got {_kind(stream)})")
    tools, names = tools_of(req.get("tools"))
    non_text: set[str] = set()
    messages = _system(req.get("system"))
    messages += _messages(_required(req, "messages", list), names, non_text)
    body: dict[str, Any] = {"model": model, "messages": messages, "stream": stream}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if tools:
        body["tools"] = tools
    tool_choice(req.get("tool_choice"), names, body)
    thinking = thinking_effort(req.get("thinking"), max_tokens, body)
    output_config(req.get("output_config"), thinking, body)
    if req.get("mcp_servers"):
        raise InvalidRequest("mcp_servers: MCP servers are connected by Anthropic's platform; this gateway's "
                             "models take the MCP tools as custom tools (the agent's own MCP client does)")
    sampling(req, body)
    if limits is not None:
        check_size(messages, limits)
    last = messages[-1]
    prefill = last["content"] if last["role"] == "assistant" and isinstance(last["content"], str) \
        and not last.get("tool_calls") else ""
    return MessagesRequest(body, model, stream, thinking, frozenset(non_text), prefill=prefill)


# --- system and messages --------------------------------------------------------------------------

def _system(system: Any) -> list[dict[str, Any]]:
    if system is None:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}] if system else []
    if not isinstance(system, list):
        raise InvalidRequest(f"system: Input should be a valid string or a list of text blocks (got {_kind(system)})")
    texts = []
    for i, block in enumerate(system):
        text = _text_block(block, f"system.{i}")
        if not text.startswith(BILLING_HEADER):
            texts.append(text)
    return [{"role": "system", "content": "\n\n".join(texts)}] if texts else []


def _messages(messages: list[Any], tool_names: set[str], non_text: set[str]) -> list[dict[str, Any]]:
    if not messages:
        raise InvalidRequest("messages: at least one message is required")
    out: list[dict[str, Any]] = []
    pending: dict[str, int] = {}  # tool_use ids of the previous assistant turn, not yet answered
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise InvalidRequest(f"{where}: Input should be an object (got {_kind(message)})")
        role, content = message.get("role"), message.get("content")
        if role not in ("user", "assistant", "system"):
            raise InvalidRequest(f"{where}.role: Input should be 'user', 'assistant' or 'system' (got {role!r})")
        for key in message:
            if key not in ("role", "content"):
                raise InvalidRequest(f"{where}.{key}: Extra inputs are not permitted")
        if isinstance(content, str):
            if not content and not (role == "assistant" and i == len(messages) - 1):
                raise InvalidRequest(f"{where}: all messages must have non-empty content except for the "
                                     "optional final assistant message")
            blocks: list[Any] = [{"type": "text", "text": content}]
        elif isinstance(content, list):
            if not content and not (role == "assistant" and i == len(messages) - 1):
                raise InvalidRequest(f"{where}: all messages must have non-empty content except for the "
                                     "optional final assistant message")
            blocks = content
        else:
            raise InvalidRequest(f"{where}.content: Input should be a valid string or a list of blocks "
                                 f"(got {_kind(content)})")
        if role == "system":
            out.append({"role": "system", "content": "\n\n".join(
                _text_block(b, f"{where}.content.{j}") for j, b in enumerate(blocks))})
            continue
        if role == "assistant":
            if pending:
                _unanswered(i - 1, pending)
            message_out, pending = _assistant(blocks, where, tool_names)
            out.append(message_out)
        else:
            out.extend(_user(blocks, where, pending, non_text))
            pending = {}
    if pending:
        _unanswered(len(messages) - 1, pending)
    return out


def _unanswered(index: int, pending: dict[str, int]) -> None:
    raise InvalidRequest(f"messages.{index}: `tool_use` ids were found without `tool_result` blocks immediately "
                         f"after: {', '.join(pending)}. Each `tool_use` block must have a corresponding "
                         "`tool_result` block in the next message.")


def _assistant(blocks: list[Any], where: str, tool_names: set[str]) -> tuple[dict[str, Any], dict[str, int]]:
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    ids: dict[str, int] = {}
    for j, block in enumerate(blocks):
        at = f"{where}.content.{j}"
        kind = _block_type(block, at, ASSISTANT_BLOCKS)
        if kind == "text":
            texts.append(_text_block(block, at))
        elif kind == "thinking":
            thought = block.get("thinking")
            if not isinstance(thought, str):
                raise InvalidRequest(f"{at}.thinking: Field required (a string)")
            if not isinstance(block.get("signature"), str):  # Anthropic's rule; ours are not checked
                raise InvalidRequest(f"{at}.thinking.signature: Field required")
            reasoning.append(thought)
        elif kind == "tool_use":
            call_id, name, args = block.get("id"), block.get("name"), block.get("input")
            if not isinstance(call_id, str) or not call_id:
                raise InvalidRequest(f"{at}.id: Field required (a string)")
            if not isinstance(name, str) or not name:
                raise InvalidRequest(f"{at}.name: Field required (a string)")
            if not isinstance(args, dict):
                raise InvalidRequest(f"{at}.input: Input should be an object (got {_kind(args)})")
            ids[call_id] = j
            calls.append({"id": call_id, "type": "function",
                          "function": {"name": name, "arguments": orjson.dumps(args).decode()}})
    out: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if reasoning:
        out["reasoning_content"] = "\n".join(reasoning)
    if calls:
        out["tool_calls"] = calls
    return out, ids


def _user(blocks: list[Any], where: str, pending: dict[str, int], non_text: set[str]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []  # tool messages first: OpenAI wants them right after the calls
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        at = f"{where}.content.{j}"
        kind = _block_type(block, at, USER_BLOCKS)
        if kind == "text":
            parts.append({"type": "text", "text": _text_block(block, at)})
        elif kind == "image":
            parts.append(_image(block, at))
            non_text.add("image_url")
        elif kind == "document":
            parts.append({"type": "text", "text": _document(block, at)})
        else:
            call_id = block.get("tool_use_id")
            if not isinstance(call_id, str) or not call_id:
                raise InvalidRequest(f"{at}.tool_use_id: Field required (a string)")
            if call_id not in pending:
                raise InvalidRequest(f"{at}: unexpected `tool_use_id` found in `tool_result` blocks: {call_id}. "
                                     "Each `tool_result` block must have a corresponding `tool_use` block in "
                                     "the previous message.")
            del pending[call_id]
            text, images = _result_content(block.get("content"), at)
            error = block.get("is_error", False)
            if not isinstance(error, bool):
                raise InvalidRequest(f"{at}.is_error: Input should be a valid boolean (got {_kind(error)})")
            if error and not text.lstrip().startswith(TOOL_ERROR):
                text = f"{TOOL_ERROR}{text}</tool_use_error>"
            results.append({"role": "tool", "tool_call_id": call_id, "content": text})
            if images:
                parts.extend(images)  # a tool message carries text only: its images follow it
                non_text.add("image_url")
    if pending:
        raise InvalidRequest(f"{where}: `tool_use` ids were found without `tool_result` blocks immediately "
                             f"after: {', '.join(pending)}. Each `tool_use` block must have a corresponding "
                             "`tool_result` block in the next message.")
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        results.append({"role": "user", "content": parts[0]["text"] if only_text and len(parts) == 1 else parts})
    return results


def _result_content(content: Any, at: str) -> tuple[str, list[dict[str, Any]]]:
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise InvalidRequest(f"{at}.content: Input should be a valid string or a list of blocks (got {_kind(content)})")
    texts, images = [], []
    for k, block in enumerate(content):
        kind = _block_type(block, f"{at}.content.{k}", RESULT_BLOCKS)
        if kind == "tool_reference":  # tool search's answer: the name of a tool now available
            texts.append(f"[tool {block.get('tool_name')}]")
        elif kind == "image":
            images.append(_image(block, f"{at}.content.{k}"))
        elif kind == "document":
            texts.append(_document(block, f"{at}.content.{k}"))
        elif kind == "search_result":
            texts.append("\n".join(_text_block(b, f"{at}.content.{k}.content") for b in block.get("content") or ()))
        else:
            texts.append(_text_block(block, f"{at}.content.{k}"))
    return "\n".join(texts), images


# --- blocks -----------------------------------------------------------------------------------------

def _block_type(block: Any, at: str, allowed: frozenset[str]) -> str:
    if not isinstance(block, dict):
        raise InvalidRequest(f"{at}: Input should be an object (got {_kind(block)})")
    kind = block.get("type")
    if not isinstance(kind, str) or kind not in allowed:
        raise InvalidRequest(f"{at}: Input tag {kind!r} found using 'type' does not match any of the expected "
                             f"tags: {', '.join(sorted(allowed))}")
    return str(kind)


def _text_block(block: Any, at: str) -> str:
    if not isinstance(block, dict) or block.get("type") != "text":
        raise InvalidRequest(f"{at}: Input should be a text block ({{\"type\": \"text\", \"text\": ...}})")
    text = block.get("text")
    if not isinstance(text, str):
        raise InvalidRequest(f"{at}.text: Field required (a string)")
    return text


def _image(block: dict[str, Any], at: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise InvalidRequest(f"{at}.source: Field required (an object)")
    kind = source.get("type")
    if kind == "base64":
        media, data = source.get("media_type"), source.get("data")
        if not isinstance(media, str) or media not in IMAGE_TYPES:
            raise InvalidRequest(f"{at}.source.media_type: Input should be {', '.join(sorted(IMAGE_TYPES))} "
                                 f"(got {media!r})")
        if not isinstance(data, str) or not data:
            raise InvalidRequest(f"{at}.source.data: Field required (base64 text)")
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    if kind == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidRequest(f"{at}.source.url: Input should be an http(s) URL")
        return {"type": "image_url", "image_url": {"url": url}}
    raise InvalidRequest(f"{at}.source.type: Input should be 'base64' or 'url' (got {kind!r})")


def _document(block: dict[str, Any], at: str) -> str:
    """A document the backends can read: plain text. Anything else (a PDF) would be a silent
    drop if passed on, so it is refused with a reason."""
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "text" and isinstance(source.get("data"), str):
        title = block.get("title")
        return f"{title}\n\n{source['data']}" if isinstance(title, str) and title else source["data"]
    kind = source.get("type") if isinstance(source, dict) else None
    raise InvalidRequest(f"{at}.source: only text documents can be read by this gateway's models (got {kind!r}); "
                         "send the text as a text block")


def _required(req: dict[str, Any], name: str, kind: type) -> Any:
    value = req.get(name)
    if value is None:
        raise InvalidRequest(f"{name}: Field required")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidRequest(f"{name}: Input should be a valid {kind.__name__} (got {_kind(value)})")
    return value
