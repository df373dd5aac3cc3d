"""Bad Anthropic Messages requests that the real API rejects, for the /v1/messages front.

Pure data: no imports of gateway code. Each case is
    (case id, body, expected HTTP status, expected Anthropic error type)
where body is a dict (send as JSON) or a str (send verbatim as the request body).

Every case starts from ``_OK`` (a valid request) and breaks exactly one thing, so the expected
error is unambiguous. Only cases the real API also rejects are listed; the evidence is cited per
group (see /work/notes/anthropic-research.md for the sources). Deliberately left out because the
real API accepts them, or because we could not confirm rejection:
  * ``max_tokens: 0``  - allowed (prompt-cache pre-warm, per the SDK docstring since 0.12x).
  * ``max_tokens: true`` / ``stream: "true"`` - validation is pydantic-like and may coerce in lax mode.
  * ``role: "system"`` inside messages - accepted now (mid-conversation system messages,
    ``SystemMessageParam`` in SDK 0.125.0 / 2.15.0); it was rejected by older API versions.
  * first message from the assistant, consecutive same-role turns - accepted (turns are merged).
  * ``tool_choice`` naming a tool absent from ``tools`` - rejection not confirmed.
  * negative ``top_k`` / ``top_p: -1`` - ``-1`` is an accepted sentinel for top_p ("range: -1 or 0..1"),
    top_k's rules were not confirmed.
"""

from __future__ import annotations

from typing import Any

BAD = 400
INVALID = "invalid_request_error"

_MODEL = "claude-sonnet-4-5-20250929"
_OK: dict[str, Any] = {
    "model": _MODEL,
    "max_tokens": 1024,
    "messages": [{"role": "user", "content": "hello"}],
}
_TOOL = {
    "name": "Read",
    "description": "Read a file",
    "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}, "required": ["file_path"]},
}


def _req(**fields: Any) -> dict[str, Any]:
    """The valid base request with some top-level fields replaced."""
    return {**_OK, **fields}


def _drop(field: str) -> dict[str, Any]:
    return {k: v for k, v in _OK.items() if k != field}


def _blocks(*content: Any) -> dict[str, Any]:
    """One user message whose content is the given blocks."""
    return _req(messages=[{"role": "user", "content": list(content)}])


def _after_tool_use(*result_blocks: Any) -> dict[str, Any]:
    """user -> assistant(tool_use toolu_ok) -> user(result_blocks)."""
    return _req(
        tools=[_TOOL],
        messages=[
            {"role": "user", "content": "read a.py"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_ok", "name": "Read", "input": {"file_path": "/a.py"}},
                ],
            },
            {"role": "user", "content": list(result_blocks)},
        ],
    )


def _assistant_block(block: dict[str, Any]) -> dict[str, Any]:
    return _req(
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [block]},
            {"role": "user", "content": "go on"},
        ]
    )


CASES: list[tuple[str, dict | str, int, str]] = [
    # --- Body is not a JSON object. The API answers any unparseable / non-object body with
    # 400 invalid_request_error ("There was an issue with the format or content of your request").
    ("body not json", '{"model": "claude-sonnet-4-5-20250929", "max_tokens": 10, "messages": [', BAD, INVALID),
    ("body json array", "[1, 2, 3]", BAD, INVALID),
    ("body json string", '"hello"', BAD, INVALID),
    ("body empty", "", BAD, INVALID),
    # --- max_tokens: required int >= 0. "max_tokens: Field required" (opencode-mem#50);
    # over-limit / type errors are 400 (NextChat#4964). 0 is legal (cache pre-warm) -> not listed.
    ("max_tokens missing", _drop("max_tokens"), BAD, INVALID),
    ("max_tokens negative", _req(max_tokens=-5), BAD, INVALID),
    ("max_tokens fractional", _req(max_tokens=12.5), BAD, INVALID),
    ("max_tokens string", _req(max_tokens="lots"), BAD, INVALID),
    ("max_tokens null", _req(max_tokens=None), BAD, INVALID),
    # --- messages: required non-empty list of {role, content}. "messages: at least one message is
    # required" (dify#25953); "all messages must have non-empty content except for the optional final
    # assistant message" (claude-code#6774, chatlabs#35); roles are user/assistant/system only.
    ("messages missing", _drop("messages"), BAD, INVALID),
    ("messages not a list", _req(messages={"role": "user", "content": "hi"}), BAD, INVALID),
    ("messages empty", _req(messages=[]), BAD, INVALID),
    ("message not an object", _req(messages=["hi"]), BAD, INVALID),
    ("message role missing", _req(messages=[{"content": "hi"}]), BAD, INVALID),
    ("message role tool", _req(messages=[{"role": "tool", "content": "hi"}]), BAD, INVALID),
    ("message role unknown", _req(messages=[{"role": "wizard", "content": "hi"}]), BAD, INVALID),
    ("message content missing", _req(messages=[{"role": "user"}]), BAD, INVALID),
    ("message content number", _req(messages=[{"role": "user", "content": 42}]), BAD, INVALID),
    ("message content null", _req(messages=[{"role": "user", "content": None}]), BAD, INVALID),
    ("message content empty list", _req(messages=[{"role": "user", "content": []}]), BAD, INVALID),
    ("message content empty string", _req(messages=[{"role": "user", "content": ""}]), BAD, INVALID),
    # --- Content blocks are a tagged union on "type": unknown tags give "Input tag 'x' found using
    # 'type' does not match any of the expected tags" (claude-quickstarts#251); missing required
    # fields give "<path>: Field required" (claude-code#26542); wrong scalar types are 400 too.
    ("block unknown type", _blocks({"type": "video", "url": "https://example.com/a.mp4"}), BAD, INVALID),
    ("block without type", _blocks({"text": "hi"}), BAD, INVALID),
    ("block not an object", _blocks("hi"), BAD, INVALID),
    ("text block without text", _blocks({"type": "text"}), BAD, INVALID),
    ("text block text not string", _blocks({"type": "text", "text": 123}), BAD, INVALID),
    (
        "image source unknown type",
        _blocks({"type": "image", "source": {"type": "path", "path": "/tmp/a.png"}}),
        BAD,
        INVALID,
    ),
    (
        "image base64 bad media type",
        _blocks({"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "Qk0="}}),
        BAD,
        INVALID,
    ),
    (
        "image base64 without data",
        _blocks({"type": "image", "source": {"type": "base64", "media_type": "image/png"}}),
        BAD,
        INVALID,
    ),
    ("image without source", _blocks({"type": "image"}), BAD, INVALID),
    ("tool_use without id", _assistant_block({"type": "tool_use", "name": "Read", "input": {}}), BAD, INVALID),
    ("tool_use without name", _assistant_block({"type": "tool_use", "id": "toolu_x", "input": {}}), BAD, INVALID),
    ("tool_use without input", _assistant_block({"type": "tool_use", "id": "toolu_x", "name": "Read"}), BAD, INVALID),
    (
        "tool_use input not object",
        _assistant_block({"type": "tool_use", "id": "toolu_x", "name": "Read", "input": "ls"}),
        BAD,
        INVALID,
    ),
    ("thinking block without signature", _assistant_block({"type": "thinking", "thinking": "hmm"}), BAD, INVALID),
    # --- tool_use / tool_result pairing: "unexpected `tool_use_id` found in `tool_result` blocks: ...
    # Each `tool_result` block must have a corresponding `tool_use` block in the previous message"
    # (claude-code#13460, CLIProxyAPI#497) and "`tool_use` ids were found without `tool_result` blocks
    # immediately after" (claude-code#5060, #7929).
    ("tool_result without tool_use_id", _after_tool_use({"type": "tool_result", "content": "x"}), BAD, INVALID),
    (
        "tool_result unknown tool_use_id",
        _after_tool_use({"type": "tool_result", "tool_use_id": "toolu_nope", "content": "x"}),
        BAD,
        INVALID,
    ),
    (
        "tool_result with no preceding tool_use",
        _blocks({"type": "tool_result", "tool_use_id": "toolu_orphan", "content": "x"}),
        BAD,
        INVALID,
    ),
    ("tool_use left unanswered", _after_tool_use({"type": "text", "text": "never mind"}), BAD, INVALID),
    (
        "tool_result content number",
        _after_tool_use({"type": "tool_result", "tool_use_id": "toolu_ok", "content": 42}),
        BAD,
        INVALID,
    ),
    (
        "tool_result content bad block",
        _after_tool_use(
            {
                "type": "tool_result",
                "tool_use_id": "toolu_ok",
                "content": [{"type": "tool_use", "id": "t", "name": "x", "input": {}}],
            }
        ),
        BAD,
        INVALID,
    ),
    (
        "tool_result is_error not bool",
        _after_tool_use({"type": "tool_result", "tool_use_id": "toolu_ok", "content": "x", "is_error": "very"}),
        BAD,
        INVALID,
    ),
    # --- tools: list of custom tools ({name, input_schema{type:"object"}}) or typed server tools.
    # "tools.0.custom.input_schema: Field required" (llm-gateway#1886, gcli2api#392),
    # "tools.0.custom.input_schema.type: Field required" (kilocode#12238), unknown tool type tag
    # (claude-quickstarts#251).
    ("tools not a list", _req(tools={"name": "Read"}), BAD, INVALID),
    ("tool without name", _req(tools=[{"input_schema": {"type": "object"}}]), BAD, INVALID),
    ("tool without input_schema", _req(tools=[{"name": "Read", "description": "Read a file"}]), BAD, INVALID),
    ("tool input_schema not object", _req(tools=[{"name": "Read", "input_schema": "file_path: str"}]), BAD, INVALID),
    (
        "tool input_schema without type",
        _req(tools=[{"name": "Read", "input_schema": {"properties": {}}}]),
        BAD,
        INVALID,
    ),
    ("tool unknown server type", _req(tools=[{"type": "computer_19990101", "name": "computer"}]), BAD, INVALID),
    (
        "tool OpenAI function shape",
        _req(tools=[{"type": "function", "function": {"name": "Read", "parameters": {"type": "object"}}}]),
        BAD,
        INVALID,
    ),
    # --- tool_choice: object tagged auto/any/tool/none; "tool" requires name (SDK ToolChoiceToolParam
    # marks name Required; schema errors are 400 "Field required" / tag mismatch as above).
    ("tool_choice string", _req(tools=[_TOOL], tool_choice="auto"), BAD, INVALID),
    ("tool_choice unknown type", _req(tools=[_TOOL], tool_choice={"type": "required"}), BAD, INVALID),
    ("tool_choice tool without name", _req(tools=[_TOOL], tool_choice={"type": "tool"}), BAD, INVALID),
    # --- thinking: {type: enabled, budget_tokens >= 1024 and < max_tokens} | disabled | adaptive.
    # "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024" (LibreChat#8346,
    # tingly-box#569); "`max_tokens` must be greater than `thinking.budget_tokens`"
    # (antigravity2api-nodejs#149/#150).
    (
        "thinking budget below 1024",
        _req(max_tokens=4096, thinking={"type": "enabled", "budget_tokens": 512}),
        BAD,
        INVALID,
    ),
    (
        "thinking budget equals max_tokens",
        _req(max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 2048}),
        BAD,
        INVALID,
    ),
    (
        "thinking budget above max_tokens",
        _req(max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 4096}),
        BAD,
        INVALID,
    ),
    ("thinking enabled without budget", _req(max_tokens=4096, thinking={"type": "enabled"}), BAD, INVALID),
    ("thinking unknown type", _req(thinking={"type": "on", "budget_tokens": 2048}), BAD, INVALID),
    ("thinking not an object", _req(thinking=True), BAD, INVALID),
    # --- Sampling and stop sequences. "temperature: range: 0..1" family (anthropic-sdk-python#893,
    # BoltAI#119); "top_p: range: -1 or 0..1" (anthropic-sdk-typescript#484); stop_sequences is a list
    # of strings (SDK type), non-numeric strings are type errors.
    ("temperature above 1", _req(temperature=1.5), BAD, INVALID),
    ("temperature string", _req(temperature="hot"), BAD, INVALID),
    ("top_p above 1", _req(top_p=1.5), BAD, INVALID),
    ("top_k string", _req(top_k="ten"), BAD, INVALID),
    ("stop_sequences string", _req(stop_sequences="STOP"), BAD, INVALID),
    ("stop_sequences numbers", _req(stop_sequences=[1, 2]), BAD, INVALID),
    # --- metadata: object with only user_id (string|null); other shapes are schema errors
    # ("Extra inputs are not permitted" for unknown keys: aider#3367, copilot-api#145).
    ("metadata string", _req(metadata="user-1"), BAD, INVALID),
    ("metadata user_id number", _req(metadata={"user_id": 42}), BAD, INVALID),
    ("metadata unknown key", _req(metadata={"session": "abc"}), BAD, INVALID),
    # --- system: string or list of text blocks (SDK MessageCreateParams.system).
    ("system number", _req(system=42), BAD, INVALID),
    (
        "system image block",
        _req(
            system=[{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]
        ),
        BAD,
        INVALID,
    ),
    ("system block without text", _req(system=[{"type": "text"}]), BAD, INVALID),
    # --- stream: bool (non-boolean strings are rejected even by lax validation).
    ("stream non-boolean string", _req(stream="sometimes"), BAD, INVALID),
    ("stream object", _req(stream={"on": True}), BAD, INVALID),
    # --- Unknown top-level parameter: "<field>: Extra inputs are not permitted"
    # (aider#3367 "extra_body", oli#7 "response_format").
    ("unknown top-level field", _req(response_format={"type": "json_object"}), BAD, INVALID),
    # --- model: required string; unknown ids are 404 not_found_error "model: <id>"
    # (claude-code#5349, mattermost-plugin-agents#257).
    ("model missing", _drop("model"), BAD, INVALID),
    ("model not a string", _req(model=123), BAD, INVALID),
    ("model unknown", _req(model="no-such-model-xyz"), 404, "not_found_error"),
]

assert len({case[0] for case in CASES}) == len(CASES), "duplicate case ids"
