"""Validation of ``POST /v1/chat/completions`` bodies.

Checks what the gateway relies on, and what would otherwise surface as a confusing upstream
error; any other field passes through untouched to the backend, which knows its own rules.
Every problem raises :class:`gateway.errors.InvalidRequest` naming the offending ``param``.
"""

from __future__ import annotations

from typing import Any

import attrs
import orjson

from config.schema import LimitsConfig
from gateway.errors import InvalidRequest

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# field -> (types, low, high); bounds are OpenAI's documented ranges.
NUMERIC = {
    "temperature": ((int, float), 0, 2),
    "top_p": ((int, float), 0, 1),
    "presence_penalty": ((int, float), -2, 2),
    "frequency_penalty": ((int, float), -2, 2),
    "max_tokens": ((int,), 1, None),
    "max_completion_tokens": ((int,), 1, None),
    "n": ((int,), 1, 1),  # llama.cpp refuses n > 1, and a relay of several choices is not built
    "seed": ((int,), None, None),
    "top_logprobs": ((int,), 0, 20),
    "top_k": ((int,), 0, None),
    "min_p": ((int, float), 0, 1),
}


@attrs.frozen
class ChatRequest:
    body: dict[str, Any]
    model: str | None
    stream: bool
    include_usage: bool  # the client asked for the usage chunk


def parse_chat_request(raw: bytes, content_type: str | None, limits: LimitsConfig | None = None) -> ChatRequest:
    if content_type and not _is_json(content_type):
        raise InvalidRequest(f"Content-Type must be application/json (got {content_type!r})",
                             code="unsupported_media_type", status=415)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"request body must be a JSON object, not {_kind(body)}", code="invalid_body")
    _check_messages(body.get("messages"))
    if limits is not None:
        _check_size(body["messages"], limits)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequest(f"model must be a string, not {_kind(model)}", param="model",
                             code="invalid_type")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequest(f"stream must be a boolean, not {_kind(stream)}", param="stream",
                             code="invalid_type")
    include_usage = _check_stream_options(body.get("stream_options"))
    for name, (types, low, high) in NUMERIC.items():
        if name in body and body[name] is not None:
            _check_number(name, body[name], types, low, high)
    for name, types in (("tools", list), ("stop", (str, list)), ("tool_choice", (str, dict)),
                        ("response_format", dict)):
        if body.get(name) is not None and not isinstance(body[name], types):
            raise InvalidRequest(f"{name} has the wrong type ({_kind(body[name])})", param=name,
                                 code="invalid_type")
    return ChatRequest(body, model, stream, include_usage)


def _check_messages(messages: Any) -> None:
    if messages is None:
        raise InvalidRequest("messages is required", param="messages", code="missing_required_parameter")
    if not isinstance(messages, list):
        raise InvalidRequest(f"messages must be an array, not {_kind(messages)}", param="messages",
                             code="invalid_type")
    if not messages:
        raise InvalidRequest("messages must not be empty", param="messages", code="empty_array")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"{where} must be an object, not {_kind(message)}", param=where,
                                 code="invalid_type")
        role = message.get("role")
        if role is None:
            raise InvalidRequest(f"{where}.role is required", param=f"{where}.role",
                                 code="missing_required_parameter")
        if not isinstance(role, str) or role not in ROLES:
            raise InvalidRequest(f"{where}.role {role!r} is not one of {', '.join(sorted(ROLES))}",
                                 param=f"{where}.role", code="invalid_value")
        _check_content(message.get("content"), role, f"{where}.content")


def _check_size(messages: list[Any], limits: LimitsConfig) -> None:
    if len(messages) > limits.max_messages:
        raise InvalidRequest(f"too many messages: {len(messages)} (at most {limits.max_messages})",
                             param="messages", code="too_many_messages")
    chars = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(p.get("text") or "") for p in content if isinstance(p.get("text"), str))
    if chars > limits.max_prompt_chars:
        raise InvalidRequest(f"the messages hold {chars} characters (at most {limits.max_prompt_chars})",
                             param="messages", code="prompt_too_large", status=413)


def _check_content(content: Any, role: str, where: str) -> None:
    if content is None:
        # Assistant turns that only call tools carry null content (Cline sends exactly that).
        if role == "assistant":
            return
        raise InvalidRequest(f"{where} is required for role {role!r}", param=where,
                             code="missing_required_parameter")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise InvalidRequest(f"{where} must be a string or an array of parts, not {_kind(content)}",
                             param=where, code="invalid_type")
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise InvalidRequest(f"{where}[{j}] must be an object with a string 'type'",
                                 param=f"{where}[{j}]", code="invalid_type")
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise InvalidRequest(f"{where}[{j}].text must be a string", param=f"{where}[{j}].text",
                                 code="invalid_type")


def _check_stream_options(options: Any) -> bool:
    if options is None:
        return False
    if not isinstance(options, dict):
        raise InvalidRequest(f"stream_options must be an object, not {_kind(options)}",
                             param="stream_options", code="invalid_type")
    include = options.get("include_usage", False)
    if not isinstance(include, bool):
        raise InvalidRequest("stream_options.include_usage must be a boolean",
                             param="stream_options.include_usage", code="invalid_type")
    return include


def _check_number(name: str, value: Any, types: tuple[type, ...], low: float | None,
                  high: float | None) -> None:
    if isinstance(value, bool) or not isinstance(value, types):
        wanted = "an integer" if types == (int,) else "a number"
        raise InvalidRequest(f"{name} must be {wanted}, not {_kind(value)}", param=name,
                             code="invalid_type")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"{low}" if low == high else f"between {low} and {high}" if high is not None else f">= {low}"
        raise InvalidRequest(f"{name} must be {bounds} (got {value})", param=name, code="invalid_value")


def _is_json(content_type: str) -> bool:
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or mime.endswith("+json")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "null"}.get(type(value), type(value).__name__)
