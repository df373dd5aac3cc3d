"""Validation of ``POST /v1/chat/completions`` bodies.

Checks what the gateway relies on, and what OpenAI answers with a 400 (so a client learns of its
mistake here, as it would there, instead of getting an answer to a different question or a
confusing upstream error). Fields the gateway does not know pass through untouched to the backend,
which knows its own rules (llama.cpp's ``top_k``, ``cache_prompt``...). Every problem raises
:class:`gateway.errors.InvalidRequest` naming the offending ``param``, e.g.
``messages[2].content[1].type`` or ``tools[1].function.name``.
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
# field -> the JSON type OpenAI requires; null always means "not given".
TYPED = {
    "tools": list, "stop": (str, list), "tool_choice": (str, dict), "response_format": dict,
    "logprobs": bool, "parallel_tool_calls": bool, "user": str, "logit_bias": dict, "reasoning_effort": str,
}
# The content parts of OpenAI's chat format, and the type of the field each carries its payload
# in ({"type": "text", "text": "..."}). Any other type is a 400: dropping a part nobody knows
# would answer a different question than the one asked.
PARTS = {"text": str, "image_url": dict, "input_audio": dict, "file": dict, "refusal": str}
RESPONSE_FORMATS = ("text", "json_object", "json_schema")
TOOL_CHOICES = ("none", "auto", "required")
MAX_STOP = 4  # OpenAI's limit on stop sequences


@attrs.frozen
class ChatRequest:
    body: dict[str, Any]
    model: str | None
    stream: bool
    include_usage: bool  # the client asked for the usage chunk
    # Types of the non-text content parts (image_url, file...): a text-only backend drops them.
    non_text_parts: frozenset[str] = frozenset()
    max_tokens_is_ceiling: bool = False  # an OpenAI client's max_tokens is what it wants room for


def json_object(raw: bytes, content_type: str | None) -> dict[str, Any]:
    """A request body as the JSON object every API front expects, or the 4xx saying why not."""
    if content_type and not _is_json(content_type):
        raise InvalidRequest(f"Content-Type must be application/json (got {content_type!r})",
                             code="unsupported_media_type", status=415)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"request body must be a JSON object, not {kind_of(body)}", code="invalid_body")
    return body


def parse_chat_request(raw: bytes, content_type: str | None, limits: LimitsConfig | None = None) -> ChatRequest:
    body = json_object(raw, content_type)
    non_text = _check_messages(body.get("messages"))
    if limits is not None:
        check_size(body["messages"], limits)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequest(f"model must be a string, not {kind_of(model)}", param="model",
                             code="invalid_type")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequest(f"stream must be a boolean, not {kind_of(stream)}", param="stream",
                             code="invalid_type")
    include_usage = _check_stream_options(body.get("stream_options"))
    for name, (types, low, high) in NUMERIC.items():
        if name in body and body[name] is not None:
            _check_number(name, body[name], types, low, high)
    for name, types in TYPED.items():
        if body.get(name) is not None and not isinstance(body[name], types):
            raise InvalidRequest(f"{name} must be {_wanted(types)}, not {kind_of(body[name])}", param=name,
                                 code="invalid_type")
    if body.get("top_logprobs") is not None and body.get("logprobs") is not True:
        raise InvalidRequest("top_logprobs needs logprobs set to true", param="top_logprobs",
                             code="invalid_value")
    if isinstance(body.get("stop"), list):
        _check_stop(body["stop"])
    if body.get("response_format") is not None:
        _check_response_format(body["response_format"])
    _check_tools(body.get("tools"), body.get("tool_choice"))
    return ChatRequest(body, model, stream, include_usage, non_text)


def _check_messages(messages: Any) -> frozenset[str]:
    if messages is None:
        raise InvalidRequest("messages is required", param="messages", code="missing_required_parameter")
    if not isinstance(messages, list):
        raise InvalidRequest(f"messages must be an array, not {kind_of(messages)}", param="messages",
                             code="invalid_type")
    if not messages:
        raise InvalidRequest("messages must not be empty", param="messages", code="empty_array")
    non_text: set[str] = set()
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"{where} must be an object, not {kind_of(message)}", param=where,
                                 code="invalid_type")
        role = message.get("role")
        if role is None:
            raise InvalidRequest(f"{where}.role is required", param=f"{where}.role",
                                 code="missing_required_parameter")
        if not isinstance(role, str) or role not in ROLES:
            raise InvalidRequest(f"{where}.role {_show(role)} is not one of {', '.join(sorted(ROLES))}",
                                 param=f"{where}.role", code="invalid_value")
        _check_content(message.get("content"), role, f"{where}.content", non_text)
        if role == "tool":
            _required(message.get("tool_call_id"), f"{where}.tool_call_id", str)
        if message.get("tool_calls") is not None:
            _check_tool_calls(message["tool_calls"], f"{where}.tool_calls")
    return frozenset(non_text)


def check_size(messages: list[Any], limits: LimitsConfig) -> None:
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


def _check_content(content: Any, role: str, where: str, non_text: set[str]) -> None:
    if content is None:
        # Assistant turns that only call tools carry null content (Cline sends exactly that).
        if role == "assistant":
            return
        raise InvalidRequest(f"{where} is required for role {role!r}", param=where,
                             code="missing_required_parameter")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise InvalidRequest(f"{where} must be a string or an array of parts, not {kind_of(content)}",
                             param=where, code="invalid_type")
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise InvalidRequest(f"{where}[{j}] must be an object with a string 'type'",
                                 param=f"{where}[{j}]", code="invalid_type")
        kind = part["type"]
        payload = PARTS.get(kind)
        if payload is None:
            raise InvalidRequest(f"{where}[{j}].type {_show(kind)} is not a content part type; supported: "
                                 f"{', '.join(PARTS)}", param=f"{where}[{j}].type", code="invalid_value")
        if kind == "text":
            if not isinstance(part.get("text"), str):  # an empty text part is fine
                raise InvalidRequest(f"{where}[{j}].text must be a string", param=f"{where}[{j}].text",
                                     code="invalid_type")
            continue
        _required(part.get(kind), f"{where}[{j}].{kind}", payload)
        non_text.add(kind)
        if kind == "image_url":
            _required(part["image_url"].get("url"), f"{where}[{j}].image_url.url", str)


def _check_tool_calls(calls: Any, where: str) -> None:
    """The tool calls of an assistant turn in the history, as the upstream will need them."""
    if not isinstance(calls, list):
        raise InvalidRequest(f"{where} must be an array, not {kind_of(calls)}", param=where, code="invalid_type")
    for k, call in enumerate(calls):
        function = _required(call, f"{where}[{k}]", dict).get("function")
        _required(function, f"{where}[{k}].function", dict)
        for field in ("name", "arguments"):
            _required(function.get(field), f"{where}[{k}].function.{field}", str)


def _check_stream_options(options: Any) -> bool:
    if options is None:
        return False
    if not isinstance(options, dict):
        raise InvalidRequest(f"stream_options must be an object, not {kind_of(options)}",
                             param="stream_options", code="invalid_type")
    include = options.get("include_usage", False)
    if not isinstance(include, bool):
        raise InvalidRequest("stream_options.include_usage must be a boolean",
                             param="stream_options.include_usage", code="invalid_type")
    return include


def _check_stop(stop: list[Any]) -> None:
    if len(stop) > MAX_STOP:
        raise InvalidRequest(f"stop holds {len(stop)} sequences (at most {MAX_STOP})", param="stop",
                             code="invalid_value")
    for i, sequence in enumerate(stop):
        if not isinstance(sequence, str):
            raise InvalidRequest(f"stop[{i}] must be a string, not {kind_of(sequence)}", param=f"stop[{i}]",
                                 code="invalid_type")


def _check_response_format(fmt: dict[str, Any]) -> None:
    kind = _required(fmt.get("type"), "response_format.type", str)
    if kind not in RESPONSE_FORMATS:
        raise InvalidRequest(f"response_format.type {_show(kind)} is not one of {', '.join(RESPONSE_FORMATS)}",
                             param="response_format.type", code="invalid_value")
    if kind != "json_schema":
        return
    spec = _required(fmt.get("json_schema"), "response_format.json_schema", dict)
    _required(spec.get("name"), "response_format.json_schema.name", str)
    for field, types in (("schema", dict), ("strict", bool), ("description", str)):
        if spec.get(field) is not None:
            _required(spec[field], f"response_format.json_schema.{field}", types)


def _check_tools(tools: list[Any] | None, choice: Any) -> None:
    names: list[str] = []
    for i, tool in enumerate(tools or ()):
        where = f"tools[{i}]"
        kind = _required(_required(tool, where, dict).get("type"), f"{where}.type", str)
        if kind != "function":
            # Both backends speak function tools only; OpenAI's "custom" tools would fail upstream.
            raise InvalidRequest(f"{where}.type {_show(kind)} is not supported; use 'function'",
                                 param=f"{where}.type", code="invalid_value")
        function = _required(tool.get("function"), f"{where}.function", dict)
        names.append(_required(function.get("name"), f"{where}.function.name", str))
        if function.get("parameters") is not None:
            _required(function["parameters"], f"{where}.function.parameters", dict)
    if choice is None or choice in ("none", "auto"):
        return  # harmless without tools, and some clients always send "auto"
    if isinstance(choice, str):
        if choice not in TOOL_CHOICES:
            raise InvalidRequest(f"tool_choice {_show(choice)} is not one of {', '.join(TOOL_CHOICES)}, or "
                                 "an object naming a function", param="tool_choice", code="invalid_value")
        if not names:
            raise InvalidRequest("tool_choice 'required' needs tools", param="tool_choice", code="invalid_value")
        return
    if _required(choice.get("type"), "tool_choice.type", str) != "function":
        raise InvalidRequest(f"tool_choice.type {_show(choice['type'])} is not supported; use 'function'",
                             param="tool_choice.type", code="invalid_value")
    function = _required(choice.get("function"), "tool_choice.function", dict)
    name = _required(function.get("name"), "tool_choice.function.name", str)
    if name not in names:
        offered = f"the tools are: {', '.join(names)}" if names else "no tools were given"
        raise InvalidRequest(f"tool_choice names the function {_show(name)}, which is not in tools; {offered}",
                             param="tool_choice", code="invalid_value")


def _required(value: Any, param: str, types: type | tuple[type, ...]) -> Any:
    """``value`` if it has the type required at ``param``, else the 400 saying it is missing
    (null, absent or an empty string) or of the wrong type."""
    if value is None or value == "":
        raise InvalidRequest(f"{param} is required", param=param, code="missing_required_parameter")
    if not isinstance(value, types):
        raise InvalidRequest(f"{param} must be {_wanted(types)}, not {kind_of(value)}", param=param,
                             code="invalid_type")
    return value


def _check_number(name: str, value: Any, types: tuple[type, ...], low: float | None,
                  high: float | None) -> None:
    if isinstance(value, bool) or not isinstance(value, types):
        wanted = "an integer" if types == (int,) else "a number"
        raise InvalidRequest(f"{name} must be {wanted}, not {kind_of(value)}", param=name,
                             code="invalid_type")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"{low}" if low == high else f"between {low} and {high}" if high is not None else f">= {low}"
        raise InvalidRequest(f"{name} must be {bounds} (got {value})", param=name, code="invalid_value")


def _is_json(content_type: str) -> bool:
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or mime.endswith("+json")


def _tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _wanted(types: type | tuple[type, ...]) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    return " or ".join(names[t] for t in _tuple(types))


def _show(value: Any) -> str:
    """A client's value, quoted and cut short: error messages echo it, whatever its size."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def kind_of(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "null"}.get(type(value), type(value).__name__)
