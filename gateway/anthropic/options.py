"""The Messages API's options: tools, ``tool_choice``, ``thinking`` and sampling, checked as
Anthropic checks them and written into the internal (OpenAI-shaped) body."""

from __future__ import annotations

from typing import Any

from gateway.errors import InvalidRequest
from gateway.validation import kind_of as _kind

# Anthropic's effort levels as OpenAI's reasoning_effort (which has no level above high).
EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}


def tools_of(tools: Any) -> tuple[list[dict[str, Any]], set[str]]:
    if tools is None:
        return [], set()
    if not isinstance(tools, list):
        raise InvalidRequest(f"tools: Input should be a valid list (got {_kind(tools)})")
    out, names = [], set()
    for i, tool in enumerate(tools):
        at = f"tools.{i}"
        if not isinstance(tool, dict):
            raise InvalidRequest(f"{at}: Input should be an object (got {_kind(tool)})")
        kind = tool.get("type", "custom")
        if kind not in ("custom", None):
            # Server tools (web_search_20250305...) run on Anthropic's side; no backend here can.
            raise InvalidRequest(f"{at}: the server tool {kind!r} runs only on Anthropic's platform; this "
                                 "gateway's models take custom tools (name, description, input_schema)")
        name, schema = tool.get("name"), tool.get("input_schema")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"{at}.name: Field required (a string)")
        if not isinstance(schema, dict):
            raise InvalidRequest(f"{at}.custom.input_schema: Field required (a JSON Schema object)")
        if schema.get("type") != "object":
            raise InvalidRequest(f"{at}.custom.input_schema.type: Input should be 'object'")
        description = tool.get("description")
        if description is not None and not isinstance(description, str):
            raise InvalidRequest(f"{at}.description: Input should be a valid string")
        if name in names:
            raise InvalidRequest(f"tools: Tool names must be unique (got {name!r} twice)")
        names.add(name)
        function: dict[str, Any] = {"name": name, "parameters": schema}
        if description:
            function["description"] = description
        out.append({"type": "function", "function": function})
    return out, names


def tool_choice(choice: Any, names: set[str], body: dict[str, Any]) -> None:
    if choice is None:
        return
    if not isinstance(choice, dict):
        raise InvalidRequest(f"tool_choice: Input should be an object (got {_kind(choice)})")
    kind = choice.get("type")
    if kind == "auto":
        body["tool_choice"] = "auto"
    elif kind == "any":
        body["tool_choice"] = "required"
    elif kind == "none":
        body["tool_choice"] = "none"
    elif kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("tool_choice.tool.name: Field required (a string)")
        if name not in names:
            raise InvalidRequest(f"tool_choice.tool.name: {name!r} is not one of the request's tools")
        body["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise InvalidRequest(f"tool_choice: Input tag {kind!r} found using 'type' does not match any of the "
                             "expected tags: 'auto', 'any', 'tool', 'none'")
    if kind != "none" and not names:
        raise InvalidRequest("tool_choice: may only be specified while providing tools")
    parallel = choice.get("disable_parallel_tool_use")
    if parallel is not None:
        if not isinstance(parallel, bool):
            raise InvalidRequest("tool_choice.disable_parallel_tool_use: Input should be a valid boolean")
        if parallel:
            body["parallel_tool_calls"] = False


def thinking_effort(thinking: Any, max_tokens: int | None, body: dict[str, Any]) -> bool:
    if thinking is None:
        body["reasoning_effort"] = "none"
        return False
    if not isinstance(thinking, dict):
        raise InvalidRequest(f"thinking: Input should be an object (got {_kind(thinking)})")
    kind = thinking.get("type")
    if kind == "disabled":
        body["reasoning_effort"] = "none"
        return False
    if kind == "adaptive":
        return True
    if kind != "enabled":
        raise InvalidRequest(f"thinking: Input tag {kind!r} found using 'type' does not match any of the expected "
                             "tags: 'enabled', 'disabled', 'adaptive'")
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool):
        raise InvalidRequest("thinking.enabled.budget_tokens: Field required (an integer)")
    if budget < 1024:
        raise InvalidRequest("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
    if max_tokens is not None and budget >= max_tokens:
        raise InvalidRequest("`max_tokens` must be greater than `thinking.budget_tokens`")
    body["reasoning_effort"] = "low" if budget < 4096 else "medium" if budget < 16384 else "high"
    return True


def sampling(req: dict[str, Any], body: dict[str, Any]) -> None:
    for name, low, high in (("temperature", 0, 1), ("top_p", 0, 1)):
        value = req.get(name)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
            raise InvalidRequest(f"{name}: Input should be a number in the range {low}..{high} (got {value!r})")
        body[name] = value
    top_k = req.get("top_k")
    if top_k is not None:
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0:
            raise InvalidRequest(f"top_k: Input should be a non-negative integer (got {top_k!r})")
        body["top_k"] = top_k
    stops = req.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            raise InvalidRequest("stop_sequences: Input should be a list of non-empty strings")
        if stops:
            body["stop"] = stops
    metadata = req.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise InvalidRequest(f"metadata: Input should be an object (got {_kind(metadata)})")
        for key in metadata:
            if key != "user_id":
                raise InvalidRequest(f"metadata.{key}: Extra inputs are not permitted")
        user = metadata.get("user_id")
        if user is not None and not isinstance(user, str):
            raise InvalidRequest("metadata.user_id: Input should be a valid string")


def output_config(config: Any, thinking: bool, body: dict[str, Any]) -> None:
    """``effort`` sets how hard a thinking model reasons; ``format`` (a JSON schema) is OpenAI's
    ``response_format``, which llama.cpp turns into a grammar and Cerebras enforces."""
    if config is None:
        return
    if not isinstance(config, dict):
        raise InvalidRequest(f"output_config: Input should be an object (got {_kind(config)})")
    effort = config.get("effort")
    if effort is not None:
        if not isinstance(effort, str) or effort not in EFFORTS:
            raise InvalidRequest(f"output_config.effort: Input should be {', '.join(EFFORTS)} (got {effort!r})")
        if thinking:  # without thinking the model is told not to reason at all, whatever the effort
            body["reasoning_effort"] = EFFORTS[effort]
    fmt = config.get("format")
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
            raise InvalidRequest("output_config.format: Input should be {\"type\": \"json_schema\", \"schema\": {...}}")
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "output", "schema": fmt["schema"], "strict": True}}
